"""Evaluation report: summary tables (mean ± std over rounds, macro average over
categories), results.json, and report.html with ROC / PRO curves and a grid of the
worst false positives and missed defects with their heatmaps (matplotlib PNGs)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from .container import atomic_write_bytes

METRICS = ["image_auroc", "pixel_auroc", "aupro", "f1_max", "fpr_at_threshold",
           "detection_rate_at_threshold", "enroll_s", "infer_ms"]
PERCENT = {"image_auroc", "pixel_auroc", "aupro", "f1_max", "fpr_at_threshold",
           "detection_rate_at_threshold"}


def summarise(results: List[dict]) -> Dict[str, dict]:
    """{"per_category": {cat: {method: {K: {metric: [mean, std, n]}}}}, "macro": {method: {K: ...}}}."""
    groups: Dict[tuple, List[dict]] = {}
    for r in results:
        groups.setdefault((r["category"], r["method"], r["shots"]), []).append(r)
    per_cat: Dict[str, dict] = {}
    for (cat, meth, k), rs in sorted(groups.items()):
        per_cat.setdefault(cat, {}).setdefault(meth, {})[str(k)] = {
            m: _mean_std([r[m] for r in rs]) for m in METRICS}
    macro: Dict[str, dict] = {}
    methods = sorted({m for c in per_cat.values() for m in c})
    for meth in methods:
        for k in sorted({k for c in per_cat.values() for k in c.get(meth, {})}, key=int):
            # macro average of the per-round values: the mean over categories, per round
            cats = [c for c in per_cat if k in per_cat[c].get(meth, {})]
            macro.setdefault(meth, {})[k] = {
                m: _mean_std(_macro_rounds([groups[(c, meth, int(k))] for c in cats], m)) for m in METRICS}
    return {"per_category": per_cat, "macro": macro}


def _macro_rounds(per_cat_rounds: List[List[dict]], metric: str) -> List[float]:
    by_round: Dict[int, List[float]] = {}
    for rs in per_cat_rounds:
        for r in rs:
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
    return f"{mean:.2f} ± {std:.2f}"


def markdown_tables(summary: dict, metrics=("image_auroc", "pixel_auroc", "aupro", "f1_max",
                                            "fpr_at_threshold", "detection_rate_at_threshold",
                                            "enroll_s", "infer_ms")) -> str:
    """One Markdown table per category (rows = method × K), values in % except times."""
    out = []
    for cat, by_m in summary["per_category"].items():
        out.append(f"\n**{cat}** (mean ± std over rounds; n = rounds)\n")
        out.append("| method | K | n | " + " | ".join(metrics) + " |")
        out.append("|---|---|---|" + "---|" * len(metrics))
        for meth, by_k in by_m.items():
            for k, vals in by_k.items():
                n = vals[metrics[0]][2]
                out.append(f"| {meth} | {k} | {n} | " + " | ".join(fmt(vals[m], m) for m in metrics) + " |")
    return "\n".join(out) + "\n"


def write_report(doc: dict, outdir: Path, data_root: Path = None) -> Dict[str, Path]:
    """results.json + report.html (+ PNGs under figures/); returns the paths."""
    outdir = Path(outdir)
    doc = dict(doc, summary=summarise(doc["results"]))
    js = outdir / "results.json"
    atomic_write_bytes(js, json.dumps(doc, indent=1, default=str).encode())
    figs = _figures(doc, outdir, Path(data_root or doc["data"]))
    page = outdir / "report.html"
    atomic_write_bytes(page, _html(doc, figs).encode())
    return {"json": js, "html": page}


def _figures(doc: dict, outdir: Path, data_root: Path) -> Dict[tuple, List[str]]:
    import matplotlib
    matplotlib.use("Agg")
    from .evaluate import load_round
    figdir = outdir / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    by: Dict[tuple, List[dict]] = {}
    for r in doc["results"]:
        if r["round"] == 0:
            by.setdefault((r["category"], r["method"]), []).append(r)
    out: Dict[tuple, List[str]] = {}
    for (cat, meth), rs in by.items():
        rs = sorted(rs, key=lambda r: r["shots"])
        loaded = [(r, load_round(outdir / r["cache"])[1]) for r in rs]
        stem = f"{cat}-{meth}"
        out[(cat, meth)] = [_curves(loaded, figdir / f"{stem}-curves.png"),
                            _worst_grid(loaded[-1], figdir / f"{stem}-worst.png", data_root)]
    return out


def _curves(loaded, path: Path) -> str:
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for r, a in loaded:
        lab = f"K={r['shots']}"
        axes[0].plot(*a["image_roc"], label=f"{lab} ({100 * r['image_auroc']:.1f})")
        axes[1].plot(*a["pixel_roc"], label=f"{lab} ({100 * r['pixel_auroc']:.1f})")
        axes[2].plot(*a["pro_curve"], label=f"{lab} ({100 * r['aupro']:.1f})")
    for ax, t, xl, yl in zip(axes, ["image ROC", "pixel ROC", "PRO (to FPR 0.3)"],
                             ["FPR"] * 3, ["TPR", "TPR", "PRO"]):
        ax.set_title(f"{t}, round 0")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[2].set_xlim(0, 0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def _worst_grid(loaded_one, path: Path, data_root: Path) -> str:
    import cv2
    import matplotlib.pyplot as plt
    from .imageio import read_image
    r, a = loaded_one
    kinds = [k for k in ("false_positive", "missed_defect") if r["worst"].get(k)]
    ncol = max(len(r["worst"][k]) for k in kinds)
    fig, axes = plt.subplots(len(kinds), ncol, figsize=(2.2 * ncol, 2.4 * len(kinds)), squeeze=False)
    root = Path(data_root) / r["category"]
    # one colour scale for the whole grid, so colours compare across images
    thumbs = [a[f"{k}_{j}"] for k in kinds for j in range(len(r["worst"][k]))]
    vmin, vmax = min(float(t.min()) for t in thumbs), max(float(t.max()) for t in thumbs)
    for row, kind in enumerate(kinds):
        for col in range(ncol):
            ax = axes[row][col]
            ax.axis("off")
            if col >= len(r["worst"][kind]):
                continue
            i = r["worst"][kind][col]
            heat = a[f"{kind}_{col}"]
            try:
                img = read_image(root / r["test_files"][i])
                img = cv2.resize(img, (heat.shape[1], heat.shape[0]), interpolation=cv2.INTER_AREA)
                ax.imshow(img)
            except Exception:  # the data moved: still show the heatmap
                pass
            ax.imshow(heat, cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
            flagged = bool(a["flagged"][i])
            verdict = {"false_positive": "FALSE POSITIVE" if flagged else "good, passed",
                       "missed_defect": "defect, caught" if flagged else "MISSED"}[kind]
            ax.set_title(f"{'highest good' if kind == 'false_positive' else 'lowest defect'}: "
                         f"{verdict}\n{Path(r['test_files'][i]).parent.name}/{Path(r['test_files'][i]).name[:12]} "
                         f"s={a['scores'][i]:.3g}", fontsize=7)
    fig.suptitle(f"{r['category']} {r['method']} K={r['shots']} round 0, threshold {r['threshold']:.3g}; "
                 f"heatmap colours share one scale [{vmin:.3g}, {vmax:.3g}]",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def _html(doc: dict, figs: Dict[tuple, List[str]]) -> str:
    s = doc["summary"]
    parts = ["<!doctype html><meta charset='utf-8'><title>careg-edge evaluation</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>",
             f"<h1>careg-edge evaluation</h1><p>data: {html.escape(doc['data'])}; shots "
             f"{doc['shots']}; rounds {doc['rounds']}; support sets: {html.escape(doc['support_dir'])}</p>",
             "<p>Values in % (mean ± std over rounds) except enroll_s (s) and infer_ms (ms/image). "
             "FPR / detection rate use each profile's own threshold (calibrated on good images only).</p>"]
    parts.append("<h2>Macro average over categories</h2>" + _table({"all": s["macro"]}))
    for cat, by_m in s["per_category"].items():
        parts.append(f"<h2>{html.escape(cat)}</h2>" + _table({cat: by_m}))
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
