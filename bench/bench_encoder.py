"""Encoder latency and throughput per backbone: torch CPU vs ONNX Runtime CPU FP32 vs INT8.

    nice .venv/bin/python bench/bench_encoder.py [--backbones resnet18,...] [--size 224]
        [--batches 1,4,16] [--budget 8] [--calib DIR] [--out bench/results_encoder.md]

Each cell = median latency of timed runs (after one warm-up) until `--budget`
seconds or 5 runs; threads = cores for every runtime. GFLOPs are counted from
the torch modules (2 x MACs of every Conv2d / Linear, per image); "% peak" =
achieved FLOP/s over this CPU's theoretical FP32 peak (cores x clock x FLOP per
cycle from the CPU's vector units), with a measured SGEMM figure for scale.
INT8 rows use the same GFLOPs (operations, not FLOP/s of float units).
Encoders: ImageNet trunk weights where this machine has them, else random (the
cost is the same), with rotation_scale STNs as a trained CAReg encoder has.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOOD = REPO.parent / "shared" / "data" / "mpdd" / "metal_plate" / "train" / "good"


def cpu_facts():
    """(model name, cores, GHz, FP32 FLOP/cycle/core) from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda k: next((l.split(":", 1)[1].strip() for l in info.splitlines()  # noqa: E731
                            if l.startswith(k)), "")
    flags, name = field("flags").split(), field("model name") or platform.processor()
    ghz = float(field("cpu MHz") or 0) / 1000 or float(field("bogomips") or 0) / 2000
    if "avx512f" in flags:
        per_cycle = 64
    elif "avx2" in flags and "fma" in flags:
        # Zen 1/Zen+ (family 23, model < 0x30) split 256-bit FMAs over 2x128-bit pipes
        zen1 = field("cpu family") == "23" and int(field("model") or 0) < 0x30
        per_cycle = 16 if zen1 else 32
    else:
        per_cycle = 8
    return name, os.cpu_count() or 1, ghz, per_cycle


def sgemm_gflops(threads: int) -> float:
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 1.0:
        a @ b
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0) / 1e9


def encoder_gflops(enc, size) -> float:
    import torch
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        else:
            k = mod.in_features
        total[0] += 2 * out.numel() * k

    hs = [m.register_forward_hook(hook) for m in enc.modules()
          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        enc(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0] / 1e9


def build(backbone: str, size: int):
    import torch
    from careg_edge.encoder.careg import CARegEncoder
    from careg_edge.errors import CaregError
    torch.manual_seed(0)
    try:
        enc, weights = CARegEncoder(backbone, "rotation_scale", "default", (size, size)), "imagenet"
    except CaregError:
        enc, weights = CARegEncoder(backbone, "rotation_scale", None, (size, size)), "random"
    return enc.eval(), weights


def time_cell(fn, x, budget: float):
    fn(x)   # warm-up (allocations, ORT's first-run kernel choice)
    times, t_end = [], time.perf_counter() + budget
    while len(times) < 5 and (not times or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def runners(enc, onnx_fp32, onnx_int8, threads):
    import torch
    from careg_edge.runtime.onnxruntime_backend import OnnxRuntime
    torch.set_num_threads(threads)

    def torch_run(x):
        with torch.no_grad():
            enc(torch.from_numpy(x))
    out = {"torch cpu fp32": torch_run,
           "ort cpu fp32": OnnxRuntime(onnx_fp32, threads=threads).infer}
    if onnx_int8:
        out["ort cpu int8"] = OnnxRuntime(onnx_int8, threads=threads).infer
    return out


def main(argv=None):
    from careg_edge.encoder.backbones import BACKBONES
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of timed runs per cell")
    ap.add_argument("--calib", default=str(GOOD) if GOOD.is_dir() else None)
    ap.add_argument("--num-calib", type=int, default=16)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--out", default=None, help="also write the table (markdown) here")
    a = ap.parse_args(argv)
    from careg_edge.calibration.int8 import quantize
    from careg_edge.export.onnx import export_onnx

    name, cores, ghz, per_cycle = cpu_facts()
    peak = cores * ghz * per_cycle
    lines = [f"machine: {name}, {cores} cores @ {ghz:.2f} GHz, FP32 peak {peak:.0f} GFLOP/s "
             f"({per_cycle} FLOP/cycle/core); measured torch SGEMM {sgemm_gflops(cores):.1f} GFLOP/s; "
             f"load average at start {os.getloadavg()[0]:.1f}; input {a.size}x{a.size}; threads {cores}",
             "", "| backbone | weights | GFLOPs/img | runtime | batch | latency ms | img/s | % peak |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    batches = [int(b) for b in a.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="careg-bench-") as tmp:
        for bb in a.backbones.split(","):
            enc, weights = build(bb, a.size)
            gf = encoder_gflops(enc, a.size)
            fp32 = export_onnx(enc, Path(tmp) / f"{bb}.onnx", verbose=False)
            int8 = None
            if not a.no_int8 and a.calib:
                int8 = quantize(fp32, a.calib, Path(tmp) / f"{bb}.int8.onnx", a.num_calib)
            for rname, fn in runners(enc, fp32, int8, cores).items():
                for b in batches:
                    x = np.random.default_rng(0).standard_normal((b, 3, a.size, a.size))
                    x = x.astype(np.float32)
                    s = time_cell(fn, x, a.budget)
                    row = (f"| {bb} | {weights} | {gf:.2f} | {rname} | {b} | {s * 1e3:.1f} | "
                           f"{b / s:.1f} | {100 * gf * b / s / peak:.1f}% |")
                    lines.append(row)
                    print(row, flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
