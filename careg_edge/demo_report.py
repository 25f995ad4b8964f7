"""The demo's HTML report: one self-explaining page next to its images.

Plain HTML + inline CSS, no scripts and no network: it must open from a file
on an air-gapped line PC. Images are linked relative to the report folder.
"""
from __future__ import annotations

import html
import math
from datetime import datetime

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:6px;text-align:left;vertical-align:middle}
img{width:160px;height:auto;image-rendering:pixelated}.defect{color:#c00;font-weight:bold}.ok{color:#070;font-weight:bold}
.wrong{background:#fff3f3}.muted{color:#777;font-size:90%}code{background:#f4f4f4;padding:1px 4px}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _timings(rows) -> str:
    keys = []
    for r in rows:
        keys += [k for k in r.timings if k not in keys]
    if not keys:
        return "<p class=muted>The inspector reported no per-stage timings.</p>"
    cells = "".join(f"<tr><td>{_e(k)}</td><td>{sum(r.timings.get(k, 0) for r in rows) / len(rows):.1f}</td></tr>"
                    for k in keys)
    return f"<table style='width:auto'><tr><th>stage</th><th>mean ms / image</th></tr>{cells}</table>"


def _row(r) -> str:
    dec = "DEFECT" if r.is_defect else "OK"
    truth = f"<img src='{_e(r.truth)}' alt='ground truth'>" if r.truth else "<span class=muted>—</span>"
    return (f"<tr class='{'' if r.correct else 'wrong'}'><td><code>{_e(r.input)}</code><br>{_e(r.kind)}</td>"
            f"<td><img src='{_e(r.image)}' alt='{_e(r.input)}'></td>"
            f"<td><img src='{_e(r.overlay)}' alt='heatmap of {_e(r.input)}'></td><td>{truth}</td>"
            f"<td>{r.score:.4g}</td><td>{r.threshold:.4g}</td>"
            f"<td class='{dec.lower()}'>{dec}{'' if r.correct else ' ✗'}</td>"
            f"<td>{sum(r.timings.values()):.1f}</td></tr>")


def render(res) -> str:
    n_def = sum(r.kind != "good" for r in res.rows)
    caught = sum(r.is_defect for r in res.rows if r.kind != "good")
    alarms = sum(r.is_defect for r in res.rows if r.kind == "good")
    support = ", ".join(f"<code>{_e(s)}</code>" for s in res.support)
    rows = "".join(_row(r) for r in res.rows)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>careg-edge demo report</title><style>{CSS}</style></head><body>
<h1>careg-edge demo: turned steel flange</h1>
<p class=muted>{datetime.now().isoformat(timespec="seconds")} · data: bundled synthetic flange
(careg_edge/demo_data, drawn by careg_edge/synth_parts.py) · profile <code>{_e(res.profile.name)}</code></p>
<h2>Result</h2>
<ul><li>encoder: {_e(res.encoder)}; estimator: <b>{_e(res.estimator)}</b>; threshold <b>{res.threshold:.4g}</b>
(set from good images only)</li>
<li>defects caught: <b>{caught}/{n_def}</b>; false alarms on good parts: <b>{alarms}/{len(res.rows) - n_def}</b>;
image AUROC {_fmt(res.auroc)}</li>
<li>enrollment {res.enroll_s:.1f} s; whole demo {res.total_s:.1f} s</li></ul>
<h2>Support set ({len(res.support)} good images)</h2><p>{support}</p>
<h2>Timings</h2>{_timings(res.rows)}
<h2>Every test image</h2>
<p class=muted>Heatmap colours are relative to the threshold: the middle of the scale (green) is the
threshold, red is twice it. White outline: the predicted defect mask. Rows with ✗ disagree with the truth.</p>
<table><tr><th>input</th><th>image</th><th>heatmap</th><th>truth</th><th>score</th><th>threshold</th>
<th>decision</th><th>ms</th></tr>{rows}</table>
</body></html>
"""


def write_demo_report(res) -> None:
    res.report.write_text(render(res), encoding="utf-8")
