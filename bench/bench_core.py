"""One table: the compiled core vs the NumPy reference, torch (CPU), faiss-cpu and OpenCV,
plus the whole road after the encoder and the enrollment loops the core took over.

    nice .venv/bin/python bench/bench_core.py [--quick]

Shapes: 224x224 input, P = 56x56 = 3136 positions, D = 448 and 100, B = 1 and 8,
support set K = 8 augmented images -> PatchCore bank = 10 % coreset of 8*3136.
Times are best-of-N wall clock per image (ms). NumPy/torch Mahalanobis run on a
quarter of the positions (the dense factor of all 3136 would need 2.5 GB) and are
scaled x4, which is exact for a per-position kernel up to cache effects.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from careg_edge import _core  # noqa: E402
from tests import reference as ref  # noqa: E402

P, GRID, IMG, K_SUPPORT = 3136, 56, 224, 8


def best(fn, reps):
    fn()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    return min(t) * 1e3


def peak_gflops():
    """Theoretical fp32 peak: cores x 2 FMA pipes x 8 lanes x 2 flop x clock (AVX2)."""
    mhz = 0.0
    for line in open("/proc/cpuinfo"):
        if line.startswith("cpu MHz"):
            mhz = max(mhz, float(line.split(":")[1]))
    return _core.default_threads() * 2 * 8 * 2 * mhz / 1e3


def stream_gbs():
    a = np.ones(64 << 20, np.float32)  # 256 MB, read once per sum
    return a.nbytes / best(lambda: a.sum(), 3) / 1e6


def torch_maha(x, mean, L):
    import torch
    d = torch.from_numpy(x) - torch.from_numpy(mean)           # [B, P, D]
    z = torch.einsum("bpi,pij->bpj", d, torch.from_numpy(L))   # batched GEMM
    return torch.sqrt((z * z).sum(-1))


def mahalanobis_rows(rng, reps):
    rows = []
    for D in (448, 100):
        T = D * (D + 1) // 2
        mean = rng.normal(size=(P, D)).astype(np.float32)
        factor = (rng.normal(size=(P, T)) * 0.05).astype(np.float32)
        f16 = factor.astype(np.float16)
        sub = P // 4
        Ld = ref.unpack_factor(factor[:sub], D).astype(np.float32)
        for B in (1, 8):
            x = rng.normal(size=(B, P, D)).astype(np.float32)
            c32 = best(lambda: _core.mahalanobis(x, mean, factor), reps) / B
            c16 = best(lambda: _core.mahalanobis(x, mean, f16), reps) / B
            xs = np.ascontiguousarray(x[:, :sub])
            npy = best(lambda: ref.mahalanobis(xs, mean[:sub], factor[:sub]), 1) * 4 / B
            tor = best(lambda: torch_maha(xs, mean[:sub], Ld), reps) * 4 / B
            gflops = B * P * D * (D + 1) / (c32 * B) / 1e6
            gbs = factor.nbytes / (c32 * B) / 1e6
            rows.append((f"mahalanobis D={D} B={B}", c32, {"f16 factor": c16, "numpy einsum": npy,
                                                           "torch": tor}, f"{gflops:.1f} GFLOP/s {gbs:.1f} GB/s"))
        del factor, f16, Ld
    return rows


def knn_rows(rng, reps):
    import faiss
    import torch
    rows = []
    M = int(0.1 * K_SUPPORT * P)
    for D in (448, 100):
        bank = rng.normal(size=(M, D)).astype(np.float32)
        pos = rng.integers(0, P, size=M).astype(np.int32)
        index = faiss.IndexFlatL2(D)
        index.add(bank)
        tb = torch.from_numpy(bank)
        bn = (bank * bank).sum(1)
        for B in (1, 8):
            q = rng.normal(size=(B * P, D)).astype(np.float32)
            core = best(lambda: _core.knn(q, bank, 1), reps) / B
            fa = best(lambda: index.search(q, 1), reps) / B
            tq = torch.from_numpy(q)
            to = best(lambda: torch.cdist(tq, tb).topk(1, largest=False), reps) / B
            npy = best(lambda: np.argmin((q * q).sum(1)[:, None] + bn[None] - 2 * q @ bank.T, 1), 1) / B
            loc = best(lambda: _core.knn_local(q.reshape(B, P, D), bank, pos, GRID, GRID, 2, 1), reps) / B
            rows.append((f"knn D={D} B={B} M={M}", core, {"faiss flat": fa, "torch cdist": to,
                                                          "numpy gemm": npy, "core knn_local r=2": loc},
                         f"{2 * P * M * D / core / 1e6:.1f} GFLOP/s"))
    return rows


def opencv_chain(reg, theta_inv, sigma):
    import cv2
    h, w = reg.shape[1:]
    # normalised -> pixel matrices (align_corners=False), dst pixel -> src pixel
    N = np.array([[2 / IMG, 0, 1 / IMG - 1], [0, 2 / IMG, 1 / IMG - 1], [0, 0, 1]])
    S = np.array([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]])
    r = int(np.ceil(4 * sigma))
    out = []
    for b in range(len(reg)):
        M = (S @ np.vstack([theta_inv[b], [0, 0, 1]]) @ N)[:2]
        up = cv2.warpAffine(reg[b], M, (IMG, IMG), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
        m = cv2.GaussianBlur(up, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT)
        out.append(m.max())
    return out


def torch_chain(reg, theta_inv, sigma):
    import torch
    F = torch.nn.functional
    t = torch.from_numpy(theta_inv)
    x = torch.from_numpy(reg)[:, None]
    grid = F.affine_grid(t, (len(reg), 1, IMG, IMG), align_corners=False)
    up = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    k = torch.from_numpy(ref.gaussian_taps(sigma).astype(np.float32))
    r = len(k) // 2
    up = F.conv2d(F.pad(up, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    up = F.conv2d(F.pad(up, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return up.amax((1, 2, 3))


def map_rows(rng, reps):
    import cv2
    rows = []
    for B in (1, 8):
        reg = rng.random((B, GRID, GRID)).astype(np.float32)
        th = np.tile(np.array([[0.95, -0.1, 0.05], [0.1, 0.95, -0.03]], np.float32), (B, 1, 1))
        core = best(lambda: _core.anomaly_map(reg, th, IMG, IMG, 4.0), reps * 3) / B
        cv = best(lambda: opencv_chain(reg, th, 4.0), reps * 3) / B
        to = best(lambda: torch_chain(reg, th, 4.0), reps) / B
        npy = best(lambda: ref.anomaly_map(reg, th, IMG, IMG, 4.0), 1) / B
        rows.append((f"unwarp+resize+blur+max B={B}", core, {"opencv chain": cv, "torch": to,
                                                            "numpy/scipy": npy},
                     f"opencv threads {cv2.getNumThreads()}"))
    return rows


def fit_rows(rng, reps):
    """Enrollment loops: the core vs the NumPy reference they replaced, single-threaded
    BLAS as enrollment runs it (pipeline.single_thread_blas). Per fit, not per image."""
    from threadpoolctl import threadpool_limits
    rows = []
    for n in (32, 80):   # K = 4 and K = 8 with augmentation, roughly
        x = rng.normal(size=(n, P, 100)).astype(np.float32)
        core = best(lambda: _core.gaussian_factor(x, 0.01), 1)
        with threadpool_limits(limits=1, user_api="blas"):
            npy = best(lambda: ref.gaussian_factor(x, 0.01), 1)
        rows.append((f"fit gaussian N={n} P={P} D=100", core, {"numpy inv+cholesky": npy}, "per fit"))
    z = rng.normal(size=(8000, 64)).astype(np.float32)
    core = best(lambda: _core.greedy_coreset(z, 800, 0), reps)
    with threadpool_limits(limits=1, user_api="blas"):
        npy = best(lambda: ref.greedy_coreset(z, 800, 0), reps)
    rows.append(("fit coreset n=8000 m=800 k=64", core, {"numpy sgemv loop": npy},
                 "per region; regions run on all cores"))
    return rows


def road_rows(rng, reps):
    """The whole road after the encoder (features + score + map + rule + verdict) for
    a PatchCore and a PaDiM profile of the bundled encoder's shapes, vs the NumPy oracle."""
    out = {"feat1": rng.normal(size=(1, 24, 56, 56)), "feat2": rng.normal(size=(1, 40, 28, 28)),
           "feat3": rng.normal(size=(1, 112, 14, 14))}
    out = {k: v.astype(np.float32) for k, v in out.items()}
    eye = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (1, 3, 1, 1))
    out.update(theta=eye.copy(), theta_inv=eye.copy())
    rows = []
    ci = np.sort(rng.choice(176, 100, replace=False)).astype(np.int64)
    L = np.tril(rng.normal(scale=0.05, size=(P, 100, 100)))
    L[:, range(100), range(100)] = 1.0
    t = {"mean": rng.normal(size=(P, 100)).astype(np.float32), "precision_factor": ref.pack_factor(L)}
    lay = _core.Layout([24, 40, 112], [IMG, IMG], 4, "unwarp", False, ci, None)
    sc = _core.Scorer("padim", [GRID, GRID], [IMG, IMG], 4.0, "top20%", t)
    core = best(lambda: _core.inspect(lay, sc, out, 1.0, None, 0), reps)
    rows.append(("road padim top20% B=1", core, {}, "features+score+map+rule"))
    bank = rng.normal(size=(2500, 176)).astype(np.float32)
    t = {"bank": bank, "bank_pos": rng.integers(0, 784, 2500).astype(np.int32)}
    lay = _core.Layout([24, 40, 112], [IMG, IMG], 8, "unwarp", True, np.arange(176), None)
    sc = _core.Scorer("patchcore", [28, 28], [IMG, IMG], 4.0, "max", t)
    core = best(lambda: _core.inspect(lay, sc, out, 1.0, None, 0), reps)
    rows.append(("road patchcore max M=2500 B=1", core, {}, "features+kNN+Eq.7+map"))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 repetition instead of 3")
    args = ap.parse_args()
    reps = 1 if args.quick else 3
    rng = np.random.default_rng(0)
    rows = (mahalanobis_rows(rng, reps) + knn_rows(rng, reps) + map_rows(rng, reps)
            + road_rows(rng, reps) + fit_rows(rng, reps))
    print(f"careg_edge._core build [{_core.build_flags()}], threads {_core.default_threads()}, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"{'stage (ms per image)':34s} {'core':>8s}  others (ms, ratio other/core)")
    for name, core, others, note in rows:
        cells = "  ".join(f"{k} {v:.2f} ({v / core:.2f}x)" for k, v in others.items())
        print(f"{name:34s} {core:8.2f}  {cells}  | {note}")
    maha = [r for r in rows if r[0].startswith("mahalanobis")]
    pk, bw = peak_gflops(), stream_gbs()
    print(f"machine: peak {pk:.0f} GFLOP/s (AVX2 FMA theoretical), read bandwidth {bw:.1f} GB/s (numpy sum)")
    for name, _, _, note in maha:
        g, b = float(note.split()[0]), float(note.split()[2])
        print(f"  {name}: {g / pk:.1%} of peak FLOP/s, {b / bw:.1%} of read bandwidth")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
