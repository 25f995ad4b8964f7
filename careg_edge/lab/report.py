"""Evaluation report: summary tables (mean ± std over rounds, macro average over
categories), the line table (false alarms and detection at each false-alarm target,
with a pass/fail against the issue-15 targets), results.json, and report.html around
the figures of report_figures.py (curves, worst cases)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from ..container import atomic_write_bytes
from .line_metrics import verdict
from .report_figures import figures

METRICS = ["image_auroc", "pixel_auroc", "aupro", "f1_max", "fpr_at_threshold",
           "detection_rate_at_threshold", "unseen_fpr_at_threshold", "enroll_s", "infer_ms"]
PERCENT = {"image_auroc", "pixel_auroc", "aupro", "f1_max", "fpr_at_threshold",
           "detection_rate_at_threshold", "unseen_fpr_at_threshold", "fpr", "detection",
           "roc_detection"}
# per-target line metrics (line_metrics.line_metrics), averaged over rounds
LINE_METRICS = ["fpr", "fpr_ratio", "detection", "roc_detection", "gap_points"]
LINE_HEADERS = {"fpr": "FPR %", "fpr_ratio": "FPR / target", "detection": "detection % at thr",
                "roc_detection": "ROC detection % at target", "gap_points": "gap (pts)"}


def summarise(results: List[dict]) -> Dict[str, dict]:
    """{"per_category": {cat: {method: {K: {metric: [mean, std, n]}}}}, "macro": {method: {K: ...}}}."""
    groups: Dict[tuple, List[dict]] = {}
    for r in results:
        groups.setdefault((r["category"], r["method"], r["shots"]), []).append(r)
    per_cat: Dict[str, dict] = {}
    for (cat, meth, k), rs in sorted(groups.items()):
        per_cat.setdefault(cat, {}).setdefault(meth, {})[str(k)] = {
            m: _mean_std([r.get(m) for r in rs]) for m in METRICS}  # older results lack new fields
    macro: Dict[str, dict] = {}
    methods = sorted({m for c in per_cat.values() for m in c})
    for meth in methods:
        for k in sorted({k for c in per_cat.values() for k in c.get(meth, {})}, key=int):
            # macro average of the per-round values: the mean over categories, per round
            cats = [c for c in per_cat if k in per_cat[c].get(meth, {})]
            macro.setdefault(meth, {})[k] = {
                m: _mean_std(_macro_rounds([groups[(c, meth, int(k))] for c in cats], m)) for m in METRICS}
    return {"per_category": per_cat, "macro": macro, "line": summarise_line(groups)}


def summarise_line(groups: Dict[tuple, List[dict]]) -> Dict[str, dict]:
    """{cat: {method: {K: {target: {metric: [mean, std, n], "n_unseen_good": [...],
    "errors": [...], "check": verdict}}}}}: the line metrics averaged over rounds."""
    out: Dict[str, dict] = {}
    for (cat, meth, k), rs in sorted(groups.items()):
        _line_cells(out, cat, meth, k, [(row, r["n_unseen_good"]) for r in rs
                                        for row in r.get("line", [])])
        # the re-calibration arm as its own method: "<method>+recal<N>", measured on the
        # unseen goods left after the N (its "n_unseen_good" counts those)
        recal = [r["recalibration"] for r in rs if r.get("recalibration")]
        if recal:
            _line_cells(out, cat, f"{meth}+recal{recal[0]['n']}", k,
                        [(row, a["n_measured"]) for a in recal for row in a["rows"]])
    return out


def _line_cells(out: dict, cat: str, meth: str, k: int, rows_n) -> None:
    by_t: Dict[float, List[dict]] = {}
    for row, n_good in rows_n:
        by_t.setdefault(row["target_fpr"], []).append(dict(row, n_unseen_good=n_good))
    for t, rows in sorted(by_t.items()):
        cell = {m: _mean_std([row[m] for row in rows]) for m in LINE_METRICS + ["n_unseen_good"]}
        cell["rounds"] = len(rows)
        cell["errors"] = sorted({row["error"] for row in rows if row.get("error")})
        cell["check"] = verdict(k, t, cell["fpr"][0], cell["gap_points"][0], cell["fpr"][2])
        out.setdefault(cat, {}).setdefault(meth, {}).setdefault(str(k), {})[f"{t:g}"] = cell


def _macro_rounds(per_cat_rounds: List[List[dict]], metric: str) -> List[float]:
    by_round: Dict[int, List[float]] = {}
    for rs in per_cat_rounds:
        for r in rs:
            if r.get(metric) is not None:
                by_round.setdefault(r["round"], []).append(r[metric])
    n = len(per_cat_rounds)
    return [float(np.mean(v)) for v in by_round.values() if len(v) == n]


def _mean_std(v) -> List[float]:
    a = np.asarray([x for x in v if x is not None and np.isfinite(x)], float)
    if a.size == 0:
        return [float("nan"), float("nan"), 0]
    return [float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, int(a.size)]


def fmt(ms, metric: str) -> str:
    mean, std, n = ms
    if n == 0:
        return "–"
    if metric in PERCENT:
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    if metric == "gap_points":
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.2f} ± {std:.2f}"


def _target(t: str) -> str:
    return f"{100 * float(t):g} %"


def _verdict_text(cell: dict) -> str:
    text = cell["check"]["verdict"]
    if cell["errors"]:  # why a threshold is missing, e.g. the calibration cannot serve it
        text += f" [threshold error: {cell['errors'][0]}]"
    return text


def markdown_tables(summary: dict, metrics=tuple(METRICS)) -> str:
    """Per category: the paper table (rows = method × K, values in % except times),
    then the line table (rows = method × K × target) with its pass/fail."""
    out = []
    for cat, by_m in summary["per_category"].items():
        out.append(f"\n**{cat}** (mean ± std over rounds; n = rounds)\n")
        out.append("| method | K | n | " + " | ".join(metrics) + " |")
        out.append("|---|---|---|" + "---|" * len(metrics))
        for meth, by_k in by_m.items():
            for k, vals in by_k.items():
                n = vals[metrics[0]][2]
                out.append(f"| {meth} | {k} | {n} | " + " | ".join(fmt(vals[m], m) for m in metrics) + " |")
        if summary.get("line", {}).get(cat):
            out.append(line_table(cat, summary["line"][cat]))
    return "\n".join(out) + "\n"


def line_table(cat: str, by_m: dict) -> str:
    """Markdown: false alarms on all unseen good images and detection, per target."""
    cols = [LINE_HEADERS[m] for m in LINE_METRICS]
    out = [f"\n**{cat}: line metrics** (all good images not in the support; mean ± std over "
           "rounds; target: K≥2 FPR ≤ 2× target and, at 5 %, ≥ target/4; K=1 ≤ 4×; gap ≤ 10 pts; "
           "+recalN: threshold from N unseen goods as `calibrate --good` sets it, measured on "
           "the other unseen goods)\n",
           "| method | K | target | n | unseen good | " + " | ".join(cols) + " | verdict |",
           "|---|---|---|---|---|" + "---|" * len(cols) + "---|"]
    for meth, by_k in by_m.items():
        for k, by_t in by_k.items():
            for t, cell in by_t.items():
                out.append(f"| {meth} | {k} | {_target(t)} | {cell['rounds']} | "
                           f"{cell['n_unseen_good'][0]:.0f} | "
                           + " | ".join(fmt(cell[m], m) for m in LINE_METRICS)
                           + f" | {_verdict_text(cell)} |")
    return "\n".join(out)


def write_report(doc: dict, outdir: Path, data_root: Path = None) -> Dict[str, Path]:
    """results.json + report.html (+ PNGs under figures/); returns the paths."""
    outdir = Path(outdir)
    doc = dict(doc, summary=summarise(doc["results"]))
    js = outdir / "results.json"
    atomic_write_bytes(js, json.dumps(doc, indent=1, default=str).encode())
    figs = figures(doc, outdir, Path(data_root or doc["data"]))
    page = outdir / "report.html"
    atomic_write_bytes(page, _html(doc, figs).encode())
    return {"json": js, "html": page}


def _html(doc: dict, figs: Dict[tuple, List[str]]) -> str:
    s = doc["summary"]
    targets = ", ".join(f"{100 * t:g} %" for t in doc.get("targets", []))
    parts = ["<!doctype html><meta charset='utf-8'><title>careg-edge evaluation</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             ".pass{color:#070}.fail{color:#c00}</style>",
             f"<h1>careg-edge evaluation</h1><p>data: {html.escape(doc['data'])}; shots "
             f"{doc['shots']}; rounds {doc['rounds']}; false-alarm targets {targets}; "
             f"support sets: {html.escape(doc['support_dir'])}</p>",
             "<p>Values in % (mean ± std over rounds) except enroll_s (s) and infer_ms (ms/image). "
             "fpr_at_threshold / detection_rate_at_threshold use each profile's own threshold "
             "(calibrated on good images only) on the test set; unseen_fpr_at_threshold is the "
             "same threshold on every good image the profile has not seen.</p>",
             "<p><b>Line metrics</b>: per false-alarm target t, the threshold re-derived from "
             "the profile's calibration; FPR on every good image not in the support "
             "(train/good minus the support, test/good, validation/good), detection on the "
             "defective test images, the ROC's detection at FPR = t (largest TPR with FPR ≤ t) "
             "and the gap between the two in points. Verdict: K ≥ 2 FPR ≤ 2t and, at t ≥ 5 %, "
             "≥ t/4; K = 1 FPR ≤ 4t; gap ≤ 10 points; over ≥ 3 rounds. Rows labelled "
             "<i>method</i>+recalN: the threshold re-set from N unseen good images per round "
             "(seeded draw) as <code>careg-edge calibrate --good</code> sets it, every figure "
             "measured on the remaining unseen goods (the column counts those).</p>"]
    parts.append("<h2>Macro average over categories</h2>" + _table({"all": s["macro"]}))
    for cat, by_m in s["per_category"].items():
        parts.append(f"<h2>{html.escape(cat)}</h2>" + _table({cat: by_m}))
        if s.get("line", {}).get(cat):
            parts.append(f"<h3>{html.escape(cat)}: line metrics</h3>" + _line_html(s["line"][cat]))
        for meth in by_m:
            for png in figs.get((cat, meth), []):
                parts.append(f"<p><img src='figures/{html.escape(png)}' style='max-width:100%'></p>")
    return "\n".join(parts)


def _table(by_cat: dict) -> str:
    rows = ["<table><tr><th>method</th><th>K</th>" + "".join(f"<th>{m}</th>" for m in METRICS) + "</tr>"]
    for by_m in by_cat.values():
        for meth, by_k in by_m.items():
            for k, vals in by_k.items():
                rows.append(f"<tr><td>{html.escape(meth)}</td><td>{k}</td>" +
                            "".join(f"<td>{fmt(vals[m], m)}</td>" for m in METRICS) + "</tr>")
    return "\n".join(rows) + "</table>"


def _line_html(by_m: dict) -> str:
    head = "".join(f"<th>{html.escape(LINE_HEADERS[m])}</th>" for m in LINE_METRICS)
    rows = ["<table><tr><th>method</th><th>K</th><th>target</th><th>n</th><th>unseen good</th>"
            f"{head}<th>verdict</th></tr>"]
    for meth, by_k in by_m.items():
        for k, by_t in by_k.items():
            for t, cell in by_t.items():
                cls = "pass" if cell["check"].get("pass") else "fail"
                rows.append(f"<tr><td>{html.escape(meth)}</td><td>{k}</td><td>{_target(t)}</td>"
                            f"<td>{cell['rounds']}</td><td>{cell['n_unseen_good'][0]:.0f}</td>"
                            + "".join(f"<td>{fmt(cell[m], m)}</td>" for m in LINE_METRICS)
                            + f"<td class='{cls}'>{html.escape(_verdict_text(cell))}</td></tr>")
    return "\n".join(rows) + "</table>"
