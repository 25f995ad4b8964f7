"""The road after the encoder, side by side: the compiled C++ core (`_core.inspect`)
vs the torch road (careg_edge.gpu.GpuRoad) on CPU torch, and on CUDA when there is one.

    nice -n 10 .venv/bin/python bench/bench_gpu_road.py [--reps 5] [--devices cpu,cuda] [--threads N]

Shapes are EfficientNet-Lite0 at 224x224 (feat1..3 = 24x56x56, 40x28x28, 112x14x14),
registered-frame localisation (a small rotation per image), default image score
top20%: PaDiM on the 56x56 grid with 100 channels (factor [3136, 5050] fp32);
PatchCore on the 28x28 grid with all 176 channels, 3x3 aggregation, a bank of
6272 rows (a 10 % coreset of K = 8 images x 10 views x 784 cells). Random tensors:
speed does not depend on the values. Both roads return what the Inspector needs
(scores, verdicts, maps at each image's size, 224x224 here, on the host); encoder
outputs are already where each road reads them (host arrays / device tensors).
Times are best-of-reps wall clock, ms per image.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from careg_edge import _core, scoring  # noqa: E402
from careg_edge.features import FeatureSpec  # noqa: E402
from careg_edge.profile import Profile  # noqa: E402
from bench_core import best  # noqa: E402  (the same warm-up + best-of-N timer)

CHANNELS, SIZE = (24, 40, 112), (224, 224)


def profile(estimator: str, rng) -> Profile:
    stride, aggregate = (8, True) if estimator == "patchcore" else (4, False)
    spec = FeatureSpec("efficientnet_lite0", CHANNELS, SIZE, stride, "registered", aggregate)
    gh, gw = spec.grid
    P = gh * gw
    if estimator == "patchcore":
        m = 8 * 10 * P // 10
        t = {"bank": rng.normal(size=(m, spec.d_in)).astype(np.float32),
             "bank_pos": rng.integers(0, P, m).astype(np.int32)}
        params = {"d": 256, "search": "global", "radius": 2, "reweight_k": 9}
    else:
        d = 100
        L = np.tril(rng.normal(0, 0.1, size=(d, d))) + np.eye(d)
        rows, cols = np.tril_indices(d)
        t = {"mean": rng.normal(size=(P, d)).astype(np.float32),
             "precision_factor": np.ascontiguousarray(np.broadcast_to(L[rows, cols], (P, len(rows))),
                                                      np.float32),
             "channel_index": np.sort(rng.choice(spec.d_in, d, replace=False)).astype(np.int64)}
        params = {"d": d}
    info = {"features": spec.to_dict(), "estimator_params": params, "image_score": "top20%"}
    return Profile(estimator, t, 1e9, spec.grid, SIZE, 4.0, "bench" * 8, info)


def outputs(b: int, rng) -> dict:
    out = {f"feat{k + 1}": rng.normal(size=(b, c, 56 >> k, 56 >> k)).astype(np.float32)
           for k, c in enumerate(CHANNELS)}
    a = rng.uniform(-0.1, 0.1, size=b)
    th = np.zeros((b, 3, 2, 3), np.float32)
    th[:, :, 0, 0] = th[:, :, 1, 1] = np.cos(a)[:, None]
    th[:, :, 0, 1], th[:, :, 1, 0] = -np.sin(a)[:, None], np.sin(a)[:, None]
    inv = th.copy()
    inv[:, :, 0, 1], inv[:, :, 1, 0] = th[:, :, 1, 0], th[:, :, 0, 1]
    return {**out, "theta": th, "theta_inv": inv}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--devices", default="cpu,cuda", help="torch devices to try (cuda skipped when absent)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads of both the core and torch (0: each one's default)")
    a = ap.parse_args(argv)
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    from careg_edge.gpu.road import GpuRoad
    devices = [d for d in a.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    rng = np.random.default_rng(0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    print(f"commit {commit}; C++ core threads {a.threads or _core.default_threads()}, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ", no CUDA device"))
    head = f"{'estimator':10} {'batch':>5} {'core ms/img':>12}"
    head += "".join(f" {'torch-' + d + ' ms/img':>18} {'core/torch':>10}" for d in devices)
    print(head)
    for estimator in ("padim", "patchcore"):
        prof = profile(estimator, rng)
        road = scoring.road(prof)
        roads = {d: GpuRoad(prof, d) for d in devices}
        for b in (int(x) for x in a.batches.split(",")):
            out = outputs(b, rng)
            sizes = [SIZE] * b
            core = best(lambda: scoring.inspect(road, out, prof.threshold, sizes, a.threads), a.reps) / b
            row = f"{estimator:10} {b:>5} {core:>12.2f}"
            for d, g in roads.items():
                dev_out = {k: torch.from_numpy(v).to(d) for k, v in out.items()}
                ms = best(lambda: g.inspect_dict(dev_out, prof.threshold, sizes), a.reps) / b
                row += f" {ms:>18.2f} {core / ms:>10.2f}"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
