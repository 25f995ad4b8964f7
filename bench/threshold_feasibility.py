"""Can any one multiplier q meet the false-alarm band on every real category?

The enrollment threshold is log t = m + b_K + q * scale (calibration/threshold.py);
the prior picks q_K(a) from other categories. This asks the stronger question, from
the prior's records alone: scanning q, which values give each real category a mean
false-alarm rate (over its recorded rounds) inside the band of issue-style targets
(K >= 2: <= 2x the target and, at 5 %, >= target/4; K = 1: <= 4x), with b_K and
sigma0_K fitted without that category? If the per-category q ranges do not overlap,
no choice of q (however learned) meets the band on all of them with this statistic.

    python bench/threshold_feasibility.py calibration/tail_prior.careg --targets 0.01,0.05
"""
from __future__ import annotations

import argparse

import numpy as np

from careg_edge.calibration.tail_prior import TailPrior, predictive_scale

QS = np.linspace(-3.0, 15.0, 721)


def in_band(rate: float, a: float, k: int) -> bool:
    if k == 1:
        return rate <= 4 * a
    return rate <= 2 * a and (a < 0.02 or rate >= a / 4)


def q_range(prior_path, setting, cat, k, a):
    """(lowest, highest) q that keeps `cat` in the band at (k, a); None if no q does."""
    full = TailPrior.load(prior_path, setting=setting)
    p = TailPrior.load(prior_path, exclude=[cat], setting=setting).params(k, a)
    idx = [i for i, r in enumerate(full.records) if r["category"] == cat and r["k"] == k]
    if not idx:
        return None
    rows = [(full.loo[i].mean() + p["bias"],
             predictive_scale(full.loo[i], k, p["nu0"], p["sigma0"])[2], full.unseen[i]) for i in idx]
    ok = [q for q in QS if in_band(np.mean([(u > m + q * s).mean() for m, s, u in rows]), a, k)]
    return (min(ok), max(ok)) if ok else None


def _span(lo: float, hi: float) -> str:
    return f"{lo:.2f}..{'inf' if hi >= QS[-1] else f'{hi:.2f}'}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prior")
    ap.add_argument("--targets", default="0.01,0.05")
    ap.add_argument("--estimator", default="patchcore")
    ap.add_argument("--image-score", default="top20%")
    a = ap.parse_args(argv)
    setting = {"estimator": a.estimator, "image_score": a.image_score}
    recs = TailPrior.load(a.prior, setting=setting).records
    cats = sorted({r["category"] for r in recs if r.get("kind") == "real"})
    print("| K | target | " + " | ".join(cats) + " | one q for all? |")
    print("|---|---|" + "---|" * (len(cats) + 1))
    for k in sorted({r["k"] for r in recs}):
        for t in (float(x) for x in a.targets.split(",")):
            rng = [q_range(a.prior, setting, c, k, t) for c in cats]
            lo = max((r[0] for r in rng if r), default=None)
            hi = min((r[1] for r in rng if r), default=None)
            both = all(rng) and lo <= hi
            cells = [_span(*r) if r else "none" for r in rng]
            print(f"| {k} | {t:.0%} | " + " | ".join(cells)
                  + f" | {'yes: ' + _span(lo, hi) if both else 'no'} |")


if __name__ == "__main__":
    main()
