"""Inspection throughput with the encoder on a GPU: the scoring road on the same GPU
(careg_edge.gpu, torch) beside the compiled C++ core on the host, measured in one run.

EfficientNet-Lite0 at 224², K support images (default 8, augment none), PatchCore
and PaDiM, batch 1 and 32. images/s is end to end from decoded RGB arrays in memory
to verdicts (resize, normalise, encode, features, distances, map, image score,
verdict); decoding the files is left out, as a camera hands over decoded frames.

    python bench/bench_gpu.py                          # synthetic parts, cuda:0
    python bench/bench_gpu.py --data DIR --json $OUT/bench_gpu.json
    python bench/bench_gpu.py --device cpu --n 8       # smoke test on a CPU machine

--data: a folder of images (or an MVTec category: its train/good); without it the
images are synthetic textured parts made here, so the bench needs no data set.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "imagenet:efficientnet_lite0"


def synthetic_parts(n: int, size: int, seed: int = 0):
    """Smooth textured RGB parts (uint8 HxWx3): structure for the encoder, not noise."""
    import cv2
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.uint8), (0, 0), 6)
    out = []
    for _ in range(n):
        jitter = rng.normal(0, 6, base.shape)
        out.append(np.clip(base.astype(np.float32) + jitter, 0, 255).astype(np.uint8))
    return out


def folder_images(folder: Path, n: int, size: int):
    from careg_edge.imageio import list_images, read_image
    from careg_edge.preprocess import resize
    good = folder / "train" / "good"
    files = list_images(good if good.is_dir() else folder, what="--data")
    picks = [files[i % len(files)] for i in range(n)]
    return [resize(read_image(f), (size, size)) for f in picks]


def time_inspect(insp, profile, images, batch: int, min_images: int) -> float:
    """images/s of inspect_batch in calls of `batch` images, after two warm-up calls."""
    chunks = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]
    for c in chunks[:2]:
        insp.inspect_batch(c, profile)
    done, t0 = 0, time.perf_counter()
    while done < min_images:
        for c in chunks:
            insp.inspect_batch(c, profile)   # returns host results: the GPU work is finished
            done += len(c)
            if done >= min_images:
                break
    return done / (time.perf_counter() - t0)


def gpu_road_available() -> str:
    try:
        import careg_edge.gpu.road  # noqa: F401
        return ""
    except Exception as e:   # the package is optional; say why it is left out
        return f"{type(e).__name__}: {e}"


def scores_agree(insp, profile, images, road) -> float:
    """Largest relative difference of image scores, GPU road vs compiled core."""
    insp.road_device = road
    a = np.array([r.score for r in insp.inspect_batch(images, profile)])
    insp.road_device = None
    b = np.array([r.score for r in insp.inspect_batch(images, profile)])
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="Encoder device: cuda, cuda:N or cpu.")
    ap.add_argument("--data", type=Path, default=None, help="Image folder (default: synthetic parts).")
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--estimators", default="patchcore,padim")
    ap.add_argument("--n", type=int, default=256, help="Images timed per row (batch 1: n/4).")
    ap.add_argument("--json", type=Path, default=None, help="Also write every number here.")
    args = ap.parse_args(argv)

    from careg_edge import Inspector
    from careg_edge.runtime.torch_backend import TorchRuntime
    import torch

    batches = [int(b) for b in args.batches.split(",")]
    n_pool = max(batches) * 4
    pool = (folder_images(args.data, n_pool + args.shots, args.size) if args.data
            else synthetic_parts(n_pool + args.shots, args.size))
    support, test = pool[:args.shots], pool[args.shots:]
    runtime = TorchRuntime(MODEL, input_size=args.size, device=args.device)
    insp = Inspector(model=runtime)
    why_not = gpu_road_available()
    road = None if why_not else args.device
    dev_name = (torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda"
                else platform.processor() or "cpu")
    print(f"# bench_gpu: {MODEL} {args.size}², K={args.shots}, device {args.device} ({dev_name}), "
          f"torch {torch.__version__}, data {args.data or 'synthetic'}", flush=True)
    if why_not:
        print(f"# careg_edge.gpu not importable ({why_not}): core column only", flush=True)

    rows = []
    for est in args.estimators.split(","):
        insp.road_device = None
        profile = insp.enroll(support, estimator=est, augment="none")
        agree = scores_agree(insp, profile, test[:32], road) if road else float("nan")
        for b in batches:
            insp.batch_size = b
            n = max(b * 4, args.n // 4 if b == 1 else args.n)
            row = {"estimator": est, "batch": b, "images": n, "score_rel_diff": agree}
            insp.road_device = None
            row["core_ips"] = time_inspect(insp, profile, test, b, n)
            if road:
                insp.road_device = road
                row["gpu_ips"] = time_inspect(insp, profile, test, b, n)
                row["ratio"] = row["gpu_ips"] / row["core_ips"]
            rows.append(row)
            print(f"# {est} batch {b}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                      if isinstance(v, float)), flush=True)

    print("\n| estimator | batch | core (img/s) | GPU road (img/s) | GPU/core | score rel. diff |")
    print("|---|---:|---:|---:|---:|---:|")
    def ips(v):   # whole images/s on a GPU, a decimal for CPU smoke runs
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"

    for r in rows:
        gpu = ips(r["gpu_ips"]) if "gpu_ips" in r else "n/a"
        ratio = f"{r['ratio']:.2f}×" if "ratio" in r else "n/a"
        print(f"| {r['estimator']} | {r['batch']} | {ips(r['core_ips'])} | {gpu} | {ratio} | "
              f"{r['score_rel_diff']:.1e} |")
    if args.json:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        doc = {"model": MODEL, "size": args.size, "shots": args.shots, "device": args.device,
               "device_name": dev_name, "torch": torch.__version__, "commit": commit or None,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "gpu_road": not why_not, "gpu_road_missing": why_not or None,
               "cpus": os.cpu_count(), "python": sys.version.split()[0], "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
