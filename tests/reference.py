"""NumPy/SciPy oracle for the compiled core (tests and benchmarks only).

Function names and signatures mirror careg_edge._core so a test can swap one
for the other. Written for clarity, not speed; float64 inside.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def unpack_factor(factor: np.ndarray, D: int) -> np.ndarray:
    """[P, D(D+1)/2] packed row-major lower triangle -> dense [P, D, D] float64."""
    P = factor.shape[0]
    L = np.zeros((P, D, D), np.float64)
    rows, cols = np.tril_indices(D)  # row-major order: (0,0), (1,0), (1,1), ...
    L[:, rows, cols] = factor.astype(np.float64)
    return L


def pack_factor(L: np.ndarray) -> np.ndarray:
    """Dense lower-triangular [P, D, D] -> packed [P, D(D+1)/2] float32."""
    rows, cols = np.tril_indices(L.shape[-1])
    return np.ascontiguousarray(L[:, rows, cols], dtype=np.float32)


def mahalanobis(x, mean, factor, threads=0, chunk=256):
    """sqrt((x-mu)^T L L^T (x-mu)) per position: the straightforward einsum."""
    B, P, D = x.shape
    out = np.empty((B, P), np.float64)
    for p0 in range(0, P, chunk):  # chunks keep the dense factor in memory bounds
        L = unpack_factor(factor[p0:p0 + chunk], D)
        diff = x[:, p0:p0 + chunk].astype(np.float64) - mean[p0:p0 + chunk]
        z = np.einsum("bpi,pij->bpj", diff, L)
        out[:, p0:p0 + chunk] = np.sqrt(np.einsum("bpj,bpj->bp", z, z))
    return out.astype(np.float32)


def knn(q, bank, k, threads=0):
    """Brute force: full distance matrix, stable argsort (ties -> lower index)."""
    d = ((q.astype(np.float64)[:, None, :] - bank.astype(np.float64)[None]) ** 2).sum(-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1).astype(np.float32), idx.astype(np.int64)


def knn_local(q, bank, bank_pos, grid_h, grid_w, radius, k, threads=0):
    B, P, D = q.shape
    d_out = np.full((B, P, k), np.inf, np.float32)
    i_out = np.full((B, P, k), -1, np.int64)
    rows, cols = bank_pos // grid_w, bank_pos % grid_w
    for p in range(P):
        r, c = divmod(p, grid_w)
        cand = np.flatnonzero((np.abs(rows - r) <= radius) & (np.abs(cols - c) <= radius))
        if cand.size == 0:
            continue
        kk = min(k, cand.size)
        d, i = knn(q[:, p], bank[cand], kk)
        d_out[:, p, :kk], i_out[:, p, :kk] = d, cand[i]
    return d_out, i_out


def affine_sample(src, theta, out_h, out_w, threads=0):
    """grid_sample(affine_grid(theta), align_corners=False, padding_mode='border')."""
    B, C, h, w = src.shape
    xs = (2 * np.arange(out_w) + 1) / out_w - 1
    ys = (2 * np.arange(out_h) + 1) / out_h - 1
    gx, gy = np.meshgrid(xs, ys)
    out = np.empty((B, C, out_h, out_w), np.float64)
    for b in range(B):
        t = theta[b].astype(np.float64)
        sx = t[0, 0] * gx + t[0, 1] * gy + t[0, 2]
        sy = t[1, 0] * gx + t[1, 1] * gy + t[1, 2]
        ix = np.clip(((sx + 1) * w - 1) / 2, 0, w - 1)
        iy = np.clip(((sy + 1) * h - 1) / 2, 0, h - 1)
        x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        wx, wy = ix - x0, iy - y0
        s = src[b].astype(np.float64)
        top = s[:, y0, x0] * (1 - wx) + s[:, y0, x1] * wx
        bot = s[:, y1, x0] * (1 - wx) + s[:, y1, x1] * wx
        out[b] = top * (1 - wy) + bot * wy
    return out.astype(np.float32)


def gaussian_taps(sigma: float) -> np.ndarray:
    r = int(math.ceil(4 * sigma))
    if r == 0:
        return np.ones(1)
    t = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-t * t / (2 * sigma * sigma))
    return w / w.sum()


def gaussian_blur(maps, sigma, threads=0):
    """Separable, radius ceil(4 sigma), scipy mode='reflect' (d c b a | a b c d)."""
    k = gaussian_taps(sigma)
    m = maps.astype(np.float64)
    m = ndimage.correlate1d(m, k, axis=1, mode="reflect")
    m = ndimage.correlate1d(m, k, axis=2, mode="reflect")
    return m.astype(np.float32)


def anomaly_map(reg, theta_inv, out_h, out_w, sigma=4.0, threads=0):
    B = reg.shape[0]
    if theta_inv is None:
        theta_inv = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (B, 1, 1))
    up = affine_sample(reg[:, None], theta_inv, out_h, out_w)[:, 0]
    maps = gaussian_blur(up, sigma)
    return maps, maps.reshape(B, -1).max(1) if B else np.zeros(0, np.float32)
