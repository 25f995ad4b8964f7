"""Enrollment and scoring cost on this machine's CPU (issue 4's performance table).

    nice .venv/bin/python bench/bench_enroll.py [--ks 1,2,4,8] [--estimators padim,orthoad,patchcore]
        [--model imagenet:resnet50v2] [--threads 2] [--test 12]

Prints four tables, all measured in this one run on MPDD metal_plate (../shared/data):
1. enrollment wall time for K support images, with and without augmentation;
2. profile bytes per estimator (measured) and per backbone (computed from dims);
3. per-image scoring time per estimator (PatchCore: global vs registered local search)
   with the image AUROC on a small test subset, so speed and accuracy sit side by side;
4. PaDiM state against the full D x D float32 covariance per position of the RegAD code.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mpdd" / "metal_plate"
BACKBONES = {"resnet18": (64, 128, 256), "wide_resnet50_2": (256, 512, 1024),
             "resnet50v2": (256, 512, 1024), "efficientnet_lite0": (24, 40, 112),
             "mobilenet_v2": (24, 32, 96)}


def table(title, header, rows):
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


def auroc(scores, labels):
    from sklearn.metrics import roc_auc_score
    return roc_auc_score(labels, scores)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--estimators", default="padim,orthoad,patchcore")
    ap.add_argument("--model", default="imagenet:resnet50v2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--test", type=int, default=12, help="test images per class for table 3")
    a = ap.parse_args()
    from careg_edge import Inspector
    insp = Inspector(a.model, threads=a.threads)
    train = sorted((DATA / "train" / "good").glob("*.png"))
    ks = [int(k) for k in a.ks.split(",")]
    ests = a.estimators.split(",")

    rows, profiles = [], {}
    for k in ks:
        for augment in ("none", "auto"):
            if k == 1 and augment == "none":
                rows.append([k, augment, "-", "-", "-", "refused: nothing to hold out"])
                continue
            t = time.perf_counter()
            p = insp.enroll(train[:k], estimator="patchcore", augment=augment, seed=0)
            dt = time.perf_counter() - t
            if k == max(ks) and augment == "auto":
                profiles["patchcore"] = p
            tm = p.info["timings_ms"]
            rows.append([k, augment, p.info["support"]["n_views"], f"{dt:.1f}",
                         f"{tm['fit'] / 1000:.1f}", f"{tm['calibrate'] / 1000:.1f}"])
            print("  ", rows[-1], flush=True)
    table(f"1. PatchCore enrollment time, {a.model}, {a.threads} threads (s)",
          ["K", "augment", "views", "total s", "fit s", "calibrate s"], rows)

    k = max(ks)
    # Gaussian estimators: augment="none" here to keep the bench within minutes on 2 cores
    for e in ests:
        if e not in profiles:
            profiles[e] = insp.enroll(train[:k], estimator=e, augment="none", seed=0)
    rows = [[e, p.info["augment"]["request"], f"{p.nbytes / 1e6:.2f}", p.info["estimator_stats"]]
            for e, p in profiles.items()]
    table(f"2a. Profile state bytes, K={k} (measured)", ["estimator", "augment", "MB", "stats"], rows)
    rows = []
    for bb, ch in BACKBONES.items():
        P, din, d = 56 * 56, sum(ch), 100
        padim = P * (d + d * (d + 1) // 2) * 4 + d * 8
        rows.append([bb, din, f"{padim / 1e6:.1f}", f"{(padim + din * d * 4) / 1e6:.1f}",
                     f"{padim / 2e6:.1f}"])
    table("2b. PaDiM / OrthoAD profile bytes per backbone at 224 (computed, D=100)",
          ["backbone", "Din", "padim MB f32", "orthoad MB f32", "padim MB f16"], rows)

    good = sorted((DATA / "test" / "good").glob("*.png"))[:a.test]
    bad = sorted((DATA / "test" / "defect_type_unknown").glob("*.png"))[:a.test]
    labels = [0] * len(good) + [1] * len(bad)
    rows = []
    variants = [(e, {}) for e in ests]
    if "patchcore" in ests:
        variants += [("patchcore", {"search": "local", "radius": r}) for r in (1, 3)]
    for e, ov in variants:
        insp.inspect(good[0], profiles[e], **ov)  # warm-up
        t = time.perf_counter()
        rs = insp.inspect_batch(good + bad, profiles[e], **ov)
        total = (time.perf_counter() - t) * 1000 / len(rs)
        score_ms = np.mean([r.timings["score"] for r in rs])
        name = e + (f" local r={ov['radius']}" if ov else "")
        name += f" ({profiles[e].info['augment']['request']})"
        rows.append([name, f"{score_ms:.1f}", f"{total:.1f}",
                     f"{auroc([r.score for r in rs], labels):.3f}"])
    table(f"3. Per-image scoring, K={k}, batch 8, {len(labels)} test images",
          ["estimator", "score ms", "total ms/img", "image AUROC"], rows)

    rows = []
    for bb, ch in (("resnet18", 448), ("resnet50v2", 1792)):
        P = 56 * 56
        regad = P * ch * ch * 4
        ours = P * (100 + 5050) * 4
        rows.append([bb, ch, f"{regad / 1e9:.2f} GB", f"{ours / 1e6:.0f} MB (D=100 f32)",
                     f"{regad / ours:.0f}x"])
    table("4. PaDiM memory: RegAD full DxD f32 inverse per position vs packed factor",
          ["backbone", "RegAD D", "RegAD", "careg-edge", "ratio"], rows)


if __name__ == "__main__":
    main()
