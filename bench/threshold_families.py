"""Which enrollment-threshold statistic could meet the false-alarm band, from the
prior's records alone?

The shipped rule is log t = mean(LOO) + b_K + q_K(a) * scale (calibration/threshold.py),
with b_K, sigma0_K and q_K(a) fitted on the *other* categories (TailPrior). Two checks:

1. **Families.** The level (mean, median or max of the LOO log-scores) and the scale
   (the shipped shrunk spread `pred<nu0>`, the LOO spread alone `own`, sigma0 alone
   `s0`, or own floored at sigma0/2 `ownmin`) are varied; each family's b, sigma0 and q
   are fitted leave-one-category-out exactly as the prior fits the shipped one, and the
   band verdict is counted per (category, K, target). A family is *chosen* by its count
   on the synthetic categories (no real category's numbers take part), then read off on
   the real ones.
2. **Oracles.** The shipped family with the true per-record level (mean unseen
   log-score) and/or the true scale (sd of the unseen log-scores) put in: how much of the
   miss is the level, how much the spread, that K images must estimate.

Band (issue-style targets): K >= 2 rate <= 2x the target and, at 5 %, >= target/4;
K = 1 <= 4x.

    python bench/threshold_families.py calibration/tail_prior.careg
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, Dict, List

import numpy as np

from careg_edge.calibration.tail_prior import TailPrior, predictive_scale

LEVELS: Dict[str, Callable] = {"mean": np.mean, "median": np.median, "max": np.max}
SCALES = ("pred4", "pred1", "own", "s0", "ownmin")
CELLS = [(k, a) for k in (1, 2, 4, 8) for a in (0.01, 0.05)]


def in_band(rate: float, a: float, k: int) -> bool:
    if k == 1:
        return rate <= 4 * a
    return rate <= 2 * a and (a < 0.02 or rate >= a / 4)


def scale_of(kind: str, x: np.ndarray, k: int, s0: float) -> float:
    own = float(x.std(ddof=1)) if x.size > 1 else s0
    if kind.startswith("pred"):
        return predictive_scale(x, k, float(kind[4:]), s0)[2]
    return {"own": own, "s0": s0, "ownmin": max(own if x.size > 1 else 0.0, 0.5 * s0)}[kind]


def _solve_q(prep: List[list], a: float) -> float:
    """Bisection: the mean over categories of the per-round mean rate equals a."""
    def rate(q):
        return np.mean([np.mean([(u > m + q * s).mean() for m, s, u in rows]) for rows in prep])
    lo, hi = -5.0, 20.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate(mid) > a else (lo, mid)
    return hi


def held_out_rate(p: TailPrior, cat: str, k: int, a: float, level: str, scale: str,
                  oracle: str = "") -> float:
    """Mean false-alarm rate of `cat`'s recorded enrollments with b, sigma0 and q
    fitted on every other category."""
    lv = LEVELS[level]
    by_cat: Dict[str, List[int]] = {}
    for i, r in enumerate(p.records):
        if r["k"] == k and r["category"] != cat:
            by_cat.setdefault(r["category"], []).append(i)
    b = float(np.mean([np.mean([p.unseen[i].mean() - lv(p.loo[i]) for i in ii]) for ii in by_cat.values()]))
    s0 = math.sqrt(float(np.mean([np.mean([p.unseen[i].var() for i in ii]) for ii in by_cat.values()])))

    def row(i):
        m = p.unseen[i].mean() if "level" in oracle else lv(p.loo[i]) + b
        s = p.unseen[i].std() if "scale" in oracle else scale_of(scale, p.loo[i], k, s0)
        return m, s, p.unseen[i]
    q = _solve_q([[row(i) for i in ii] for ii in by_cat.values()], a)
    mine = [row(i) for i, r in enumerate(p.records) if r["k"] == k and r["category"] == cat]
    return float(np.mean([(u > m + q * s).mean() for m, s, u in mine]))


def verdicts(p: TailPrior, cats: List[str], level: str, scale: str, oracle: str = "") -> str:
    """One character per category for each (K, target) cell: Y in the band, . not."""
    return " ".join("".join("Y" if in_band(held_out_rate(p, c, k, a, level, scale, oracle), a, k)
                            else "." for c in cats) for k, a in CELLS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prior")
    ap.add_argument("--estimator", default="patchcore")
    ap.add_argument("--image-score", default="top20%")
    a = ap.parse_args(argv)
    p = TailPrior.load(a.prior, setting={"estimator": a.estimator, "image_score": a.image_score})
    real = sorted({r["category"] for r in p.records if r.get("kind") == "real"})
    synth = sorted({r["category"] for r in p.records if r.get("kind") != "real"})
    cells = " ".join(f"K{k}@{t:.0%}" for k, t in CELLS)
    print(f"cells: {cells}; one character per category (synthetic: {len(synth)}, real: {', '.join(real)})\n")
    print("| level | scale | synthetic pass | real pass | real cells |")
    print("|---|---|---|---|---|")
    for level in LEVELS:
        for scale in SCALES:
            vs, vr = verdicts(p, synth, level, scale), verdicts(p, real, level, scale)
            print(f"| {level} | {scale} | {vs.count('Y')}/{len(synth) * len(CELLS)} | "
                  f"{vr.count('Y')}/{len(real) * len(CELLS)} | `{vr}` |")
    print("\n| shipped family (mean, pred4) with | real pass | real cells |")
    print("|---|---|---|")
    for oracle in ("", "scale", "level", "level+scale"):
        v = verdicts(p, real, "mean", "pred4", oracle)
        print(f"| {('true ' + oracle) if oracle else 'nothing (shipped)'} | "
              f"{v.count('Y')}/{len(real) * len(CELLS)} | `{v}` |")


if __name__ == "__main__":
    main()
