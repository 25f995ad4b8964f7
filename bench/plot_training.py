"""Plot a `careg-edge train` learning curve (OUT/train_log.jsonl) as a PNG.

    python bench/plot_training.py runs/loo_metal_plate/train_log.jsonl \
        -o docs/img/train_loo_metal_plate.png --title "LOO metal_plate"

Top: training loss per step (light) and its running mean (the per-step loss of
a 2-query batch is noisy). Bottom: the registration cosine on held-out normal
images (`--holdout`, logged every `--eval-every` steps), with the untrained
(identity-STN) reference: the log's step-0 record, or `--baseline`. When the log
has them, a third panel shows the self-registration and θ loss terms and the
per-image registration check val_slope / val_corr (−1 = the STN undoes each
image's rotation); dead steps (skipped, `dead` in the record) are marked on the loss.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read_log(path: Path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{path}: empty training log; run careg-edge train first")
    return rows


def running_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over up to w values (same length as x, no edge padding)."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - w, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot(rows, out: Path, title: str, window: int, baseline: float | None) -> None:
    import matplotlib
    matplotlib.use("Agg")  # headless: no display on the build machine
    import matplotlib.pyplot as plt

    trained = [r for r in rows if "loss" in r]  # step 0 is the untrained reference only
    step = np.array([r["step"] for r in trained])
    loss = np.array([r["loss"] for r in trained], float)
    if baseline is None and rows[0]["step"] == 0 and "val_cosine" in rows[0]:
        baseline = rows[0]["val_cosine"]
    val = [(r["step"], r["val_cosine"]) for r in rows if "val_cosine" in r]
    slope = [(r["step"], r["val_slope"], r["val_corr"]) for r in rows if r.get("val_slope") is not None]
    fig, axes = plt.subplots(3 if slope else 2, 1, figsize=(7, 8.5 if slope else 6), sharex=True)
    a, b = axes[0], axes[1]
    a.plot(step, loss, color="tab:blue", alpha=0.3, lw=1, label="loss (per step)")
    a.plot(step, running_mean(loss, window), color="tab:blue", lw=2, label=f"running mean ({window})")
    dead = [r["step"] for r in trained if r.get("dead")]
    if dead:
        a.plot(dead, np.zeros(len(dead)), "x", color="tab:red", label=f"dead steps ({len(dead)})")
    a.set_ylabel("training loss")
    a.legend(loc="upper right")
    a.set_title(title)
    if val:
        vs, vc = zip(*val)
        b.plot(vs, vc, "o-", color="tab:green", label="held-out registration cosine (stage 3)")
    if baseline is not None:
        b.axhline(baseline, color="grey", ls="--", label=f"identity STN (untrained) {baseline:.4f}")
    b.set_xlabel("step")
    b.set_ylabel("cosine")
    b.legend(loc="lower right")
    if slope:
        _per_image_panel(axes[2], rows, slope, window)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def _per_image_panel(ax, rows, slope, window: int) -> None:
    """Self-registration term (running mean) and the held-out rotation slope/corr."""
    for key, colour, label in (("loss_self", "tab:purple", "self-registration term"),
                               ("loss_theta", "tab:brown", "θ term")):
        own = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if own:
            s, v = zip(*own)
            ax.plot(s, running_mean(np.array(v, float), window), color=colour,
                    label=f"{label} (running mean)")
    s, sl, co = zip(*slope)
    ax.plot(s, sl, "o-", color="tab:red", label="val_slope (−1 = registers each image)")
    ax.plot(s, co, "s--", color="tab:orange", label="val_corr")
    ax.axhline(-1.0, color="grey", ls=":", lw=1)
    ax.axhline(0.0, color="grey", ls="-", lw=0.5)
    ax.set_xlabel("step")
    ax.legend(loc="lower left", fontsize=8)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="train_log.jsonl")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="CAReg registration training")
    ap.add_argument("--window", type=int, default=10, help="running-mean window (steps)")
    ap.add_argument("--baseline", type=float, default=None,
                    help="held-out cosine of the untrained encoder (dashed line)")
    args = ap.parse_args(argv)
    plot(read_log(args.log), args.out, args.title, args.window, args.baseline)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
