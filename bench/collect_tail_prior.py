"""Collect the records of the enrollment threshold's cross-category prior.

For each category (real ones by path, synthetic ones made in code), shot count K
and round: draw K support images, enroll exactly as a user would (the profile's
calibration stores its leave-one-out scores), then score every other good image of
the category (at most --max-unseen, a seeded sample). One record per enrollment:
its LOO scores and the unseen good scores, both as logs. Only good images are
read: defect images never enter the prior.

    python bench/collect_tail_prior.py --real ../shared/data/mpdd/metal_plate \\
        --real ../shared/data/magnetic_tile_defects/magnetic_tile \\
        --real ../shared/data/mvtec_loco_ad_partial/juice_bottle \\
        --synthetic 7 --rounds 3 -o runs/prior/records.careg
    python bench/collect_tail_prior.py --merge runs/prior/*.careg -o calibration/tail_prior.careg

Records from several runs (e.g. one per estimator) are merged with --merge.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from careg_edge import Inspector
from careg_edge.calibration.tail_prior import TailPrior
from careg_edge.imageio import list_images, read_image
from careg_edge.runtime.base import Runtime


class MemoRuntime(Runtime):
    """Encoder outputs cached by input bytes: every image is encoded once per run."""

    def __init__(self, inner):
        self.inner, self.meta, self.cache = inner, inner.meta, {}

    def infer(self, x):
        key = hashlib.sha1(x.tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.inner.infer(x)
        return self.cache[key]


def real_category(root: Path):
    """Good images of an MVTec-layout category: (support pool = train/good, all goods)."""
    train = list_images(root / "train" / "good", "train/good")
    others = [d for d in (root / "test" / "good", root / "validation" / "good") if d.is_dir()]
    goods = train + [f for d in others for f in list_images(d, str(d))]
    return root.name, "real", train, goods


def synthetic_category(name: str, n: int, seed: int):
    from careg_edge.lab.synth_categories import make_category
    imgs = list(make_category(name, n, 224, seed))
    return f"synthetic:{name}", "synthetic", imgs, imgs


def collect(insp, category, shots, rounds, max_unseen, estimator, rule, seed, log):
    name, kind, pool, goods = category
    load = (lambda x: read_image(x)) if kind == "real" else (lambda x: x)
    images = [load(g) for g in goods]
    pool_idx = [goods.index(p) if kind == "real" else i for i, p in enumerate(pool)]
    records, loo, unseen = [], [], []
    for k in shots:
        for r in range(rounds):
            rng = np.random.default_rng([seed, k, r, sum(map(ord, name))])
            sup = sorted(rng.choice(pool_idx, k, replace=False).tolist())
            rest = [i for i in range(len(goods)) if i not in sup]
            if len(rest) > max_unseen:
                rest = sorted(rng.choice(rest, max_unseen, replace=False).tolist())
            t = time.time()
            prof = insp.enroll([images[i] for i in sup], estimator=estimator, image_score=rule,
                               seed=seed)
            scores = np.array([x.score for x in insp.inspect_batch([images[i] for i in rest], prof)])
            cal = prof.info["calibration"]
            records.append({"category": name, "kind": kind, "k": k, "round": r,
                            "estimator": estimator, "image_score": rule,
                            "encoder": insp.meta.encoder_hash[:12], "n_unseen": len(rest)})
            loo.append(np.log(np.asarray(cal["loo_scores"], np.float64)))
            unseen.append(np.log(scores))
            fpr = float((scores > prof.threshold).mean())
            log(f"{name} K={k} r={r}: {time.time() - t:.1f}s loo={np.round(cal['loo_scores'][:8], 2)} "
                f"unseen median {np.median(scores):.3g} p99 {np.quantile(scores, .99):.3g} "
                f"thr {prof.threshold:.3g} fpr {fpr:.3f}")
    return records, loo, unseen


def merge(paths, out):
    recs, loo, unseen = [], [], []
    for p in paths:
        pr = TailPrior.load(p)
        recs += pr.records
        loo += pr.loo
        unseen += pr.unseen
    TailPrior.save(out, recs, loo, unseen)
    print(f"wrote {out}: {len(recs)} records")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", action="append", default=[], type=Path)
    ap.add_argument("--synthetic", type=int, default=0, help="first N synthetic categories")
    ap.add_argument("--synthetic-n", type=int, default=60, help="images per synthetic category")
    ap.add_argument("--shots", default="1,2,4,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-unseen", type=int, default=150)
    ap.add_argument("--estimator", default="patchcore")
    ap.add_argument("--image-score", default="top20%")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--merge", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.merge:
        return merge(a.merge, a.output)
    from careg_edge.lab.synth_categories import CATEGORIES
    insp = Inspector(threads=a.threads)
    insp.runtime = MemoRuntime(insp.runtime)
    cats = [real_category(p) for p in a.real]
    cats += [synthetic_category(n, a.synthetic_n, a.seed) for n in CATEGORIES[:a.synthetic]]
    shots = [int(s) for s in a.shots.split(",")]
    recs, loo, unseen = [], [], []
    for c in cats:
        r, lo, un = collect(insp, c, shots, a.rounds, a.max_unseen, a.estimator, a.image_score,
                            a.seed, lambda m: print(m, flush=True))
        recs, loo, unseen = recs + r, loo + lo, unseen + un
        a.output.parent.mkdir(parents=True, exist_ok=True)
        TailPrior.save(a.output, recs, loo, unseen)   # after each category: resumable by hand
        insp.runtime.cache.clear()
    print(json.dumps({"records": len(recs), "output": str(a.output)}))


if __name__ == "__main__":
    sys.exit(main())
