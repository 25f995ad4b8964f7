"""Leave-one-category-out check of the threshold prior, from its records alone.

For each category X, shot count K and target rate a: the prior is fitted on every
category but X, the threshold of each of X's recorded enrollments is derived from its
own LOO scores (exactly as enrollment does), and the false-alarm rate is measured on
X's unseen good images. Prints one table (mean over rounds) and, for comparison, the
rate of the old rule (maximum of the LOO scores).

    python bench/tail_prior_report.py calibration/tail_prior.careg --targets 0.01,0.05
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from careg_edge.calibration.tail_prior import TailPrior
from careg_edge.calibration.threshold import loo_threshold


def rows(path: Path, targets, setting):
    full = TailPrior.load(path, setting=setting)
    cats = sorted({r["category"] for r in full.records})
    out = []
    for cat in cats:
        prior = TailPrior.load(path, exclude=[cat], setting=setting)
        for k in sorted({r["k"] for r in full.records if r["category"] == cat}):
            idx = [i for i, r in enumerate(full.records) if r["category"] == cat and r["k"] == k]
            for a in targets:
                fpr = [float((full.unseen[i] > np.log(loo_threshold(
                    np.exp(full.loo[i]), k, a, prior)["threshold"])).mean()) for i in idx]
                old = [float((full.unseen[i] > full.loo[i].max()).mean()) for i in idx]
                out.append({"category": cat, "k": k, "target": a, "rounds": len(idx),
                            "fpr": float(np.mean(fpr)), "ratio": float(np.mean(fpr)) / a,
                            "fpr_max_rule": float(np.mean(old))})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prior", type=Path)
    ap.add_argument("--targets", default="0.01,0.05")
    ap.add_argument("--estimator", default="patchcore")
    ap.add_argument("--image-score", default="top20%")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    setting = {"estimator": a.estimator, "image_score": a.image_score}
    res = rows(a.prior, [float(t) for t in a.targets.split(",")], setting)
    print("| category | K | target | rounds | FPR (prior w/o category) | ratio | FPR max-of-LOO |")
    print("|---|---|---|---|---|---|---|")
    for r in res:
        print(f"| {r['category']} | {r['k']} | {r['target']:.0%} | {r['rounds']} | {r['fpr']:.2%} "
              f"| {r['ratio']:.2f} | {r['fpr_max_rule']:.1%} |")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
