"""The evaluation report's figures (matplotlib PNGs under OUTDIR/figures/): per
category and method, the ROC / PRO / line-ROC curves of round 0 at every K, and a grid
of the worst false positives and missed defects with their heatmaps."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from . import metrics
from .round_cache import load_round
from .round_result import CURVE_POINTS


def figures(doc: dict, outdir: Path, data_root: Path) -> Dict[tuple, List[str]]:
    """{(category, method): [curves PNG, worst-cases PNG]} under outdir/figures, from
    round 0 of each method (its arrays read back from the round cache)."""
    import matplotlib
    matplotlib.use("Agg")
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
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    # log axis: FPR 0 is drawn at half the smallest non-zero FPR
    lo = 0.5 / max([a["unseen_scores"].size for _, a in loaded] + [1])
    for r, a in loaded:
        lab = f"K={r['shots']}"
        axes[0].plot(*a["image_roc"], label=f"{lab} ({100 * r['image_auroc']:.1f})")
        axes[1].plot(*a["pixel_roc"], label=f"{lab} ({100 * r['pixel_auroc']:.1f})")
        axes[2].plot(*a["pro_curve"], label=f"{lab} ({100 * r['aupro']:.1f})")
        # line ROC: every unseen good image against the defects, with the calibrated
        # operating points (one marker per target) on it
        defects = a["scores"][a["labels"] == 1]
        fpr, tpr = metrics.roc_curve_split(defects, a["unseen_scores"], 2 * CURVE_POINTS)
        line, = axes[3].step(np.maximum(fpr, lo), tpr, where="post", label=lab)
        pts = [(row["fpr"], row["detection"]) for row in r.get("line", []) if row["error"] is None]
        if pts:
            axes[3].plot(*np.maximum(np.array(pts).T, [[lo], [0]]), "o", color=line.get_color())
    for t in sorted({row["target_fpr"] for r, _ in loaded for row in r.get("line", [])}):
        axes[3].axvline(t, color="grey", lw=0.8, ls="--")
    for ax, t, xl, yl in zip(axes, ["image ROC (test set)", "pixel ROC", "PRO (to FPR 0.3)",
                                    "line ROC (all unseen goods); o = thresholds"],
                             ["FPR"] * 4, ["TPR", "TPR", "PRO", "detection"]):
        ax.set_title(f"{t}, round 0", fontsize=9)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[2].set_xlim(0, 0.3)
    axes[3].set_xscale("log")
    axes[3].set_xlim(lo * 0.8, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def _worst_grid(loaded_one, path: Path, data_root: Path) -> str:
    import cv2
    import matplotlib.pyplot as plt
    from ..imageio import read_image
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
