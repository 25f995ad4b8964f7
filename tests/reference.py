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


# ---- the whole road, independently: raw encoder outputs -> verdict -----------------
# Written from docs/profile-format.md ("What a scorer does with them"), in float64,
# the straightforward way round: every stage is resampled in full, then the channel
# subset / projection is applied (the core does it the other way round, for speed;
# both are linear, so the results agree).

def compose(a, b):
    """2x3 affines a∘b (apply b, then a), batched [..., 2, 3]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., :, :2] = a[..., :, :2] @ b[..., :, :2]
    out[..., :, 2] = (a[..., :, :2] @ b[..., :, 2:3])[..., 0] + a[..., :, 2]
    return out


def assemble(out, channels, input_size, grid_stride, mode, aggregate, channel_index=None,
             projection=None):
    """Raw outputs {feat1..3 [B,C,h,w], theta, theta_inv [B,3,2,3]} -> [B, P, D] float64."""
    gh, gw = input_size[0] // grid_stride, input_size[1] // grid_stride
    stages = []
    for k in range(3):
        f = out[f"feat{k + 1}"]
        assert f.shape[1] == channels[k]
        th = out["theta_inv"][:, k] if mode == "unwarp" else compose(out["theta_inv"][:, k],
                                                                    out["theta"][:, 2])
        stages.append(affine_sample(f.astype(np.float64), th, gh, gw).astype(np.float64))
    full = np.concatenate(stages, axis=1)                      # [B, Din, gh, gw]
    if channel_index is not None:
        full = full[:, np.sort(channel_index)]                 # profiles store it sorted
    elif projection is not None:
        full = np.einsum("bchw,cd->bdhw", full, projection.astype(np.float64))
    if aggregate:
        p = np.pad(full, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        full = sum(p[:, :, dy:dy + gh, dx:dx + gw] for dy in range(3) for dx in range(3)) / 9.0
    b, d = full.shape[:2]
    return full.reshape(b, d, gh * gw).transpose(0, 2, 1)


def nearest(q, bank, bank_pos, grid, search, radius):
    """PatchCore distances [B, P] and nearest bank rows, brute force; a local window
    without bank patches falls back to the whole bank."""
    B, P, _ = q.shape
    bank = bank.astype(np.float64)
    d2 = ((q[:, :, None, :] - bank[None, None]) ** 2).sum(-1)  # [B, P, M]
    if search == "local":
        gw = grid[1]
        rows, cols = np.arange(P) // gw, np.arange(P) % gw
        ok = (np.abs(rows[:, None] - bank_pos[None] // gw) <= radius) & \
             (np.abs(cols[:, None] - bank_pos[None] % gw) <= radius)   # [P, M]
        ok[~ok.any(1)] = True
        d2 = np.where(ok[None], d2, np.inf)
    nn = np.argmin(d2, axis=2)
    return np.sqrt(np.take_along_axis(d2, nn[..., None], 2)[..., 0]), nn


def reweighted(q, dist, nn, bank, k):
    """PatchCore Eq. 7 per image: (1 - softmax(|x* - m|, m in N_b(m*))[m*]) * s*."""
    bank = bank.astype(np.float64)
    out = np.empty(len(q))
    for b in range(len(q)):
        p = int(np.argmax(dist[b]))
        x, m = q[b, p], int(nn[b, p])
        order = np.argsort(((bank - bank[m]) ** 2).sum(-1), kind="stable")[:min(k, len(bank))]
        logits = np.concatenate([[np.linalg.norm(x - bank[m])],
                                 np.linalg.norm(bank[order[1:]] - x, axis=1)])
        w = 1.0 - np.exp(logits[0] - logits.max()) / np.exp(logits - logits.max()).sum()
        out[b] = w * dist[b, p]
    return out


def image_score(maps, rule):
    """max | mean | top<P>%: mean of the n = max(1, round(N P / 100)) largest (full sort)."""
    flat = np.sort(maps.reshape(len(maps), -1).astype(np.float64), axis=1)
    if rule == "max":
        return flat[:, -1]
    if rule == "mean":
        return flat.mean(axis=1)
    n = max(1, round(flat.shape[1] * float(rule[3:-1]) / 100))
    return flat[:, -n:].mean(axis=1)


def road(out, profile, search=None, radius=None):
    """The oracle of Inspector.inspect_batch / careg_inspect for a careg_edge Profile:
    -> dict(features, dist [B, P], maps [B, H, W], scores [B], defect [B])."""
    f = profile.info["features"]
    t = profile.tensors
    params = dict(profile.info.get("estimator_params", {}))
    search = search or params.get("search", "global")
    radius = params.get("radius", 2) if radius is None else radius
    x = assemble(out, f["channels"], f["input_size"], f["grid_stride"], f["mode"], f["aggregate"],
                 t.get("channel_index"), t.get("projection"))
    gh, gw = profile.grid
    rule = profile.image_score
    if profile.estimator == "patchcore":
        dist, nn = nearest(x, t["bank"], t["bank_pos"], (gh, gw), search, radius)
    else:
        D = t["mean"].shape[1]
        L = unpack_factor(t["precision_factor"], D)
        z = np.einsum("bpi,pij->bpj", x - t["mean"].astype(np.float64), L)
        dist = np.sqrt((z * z).sum(-1))
    th = out["theta_inv"][:, 2] if f["mode"] == "registered" else None
    maps, _ = anomaly_map(dist.reshape(-1, gh, gw).astype(np.float32), th, profile.image_size[0],
                          profile.image_size[1], profile.sigma)
    if profile.estimator == "patchcore" and rule == "max":
        scores = reweighted(x, dist, nn, t["bank"], params.get("reweight_k", 9))
    else:
        scores = image_score(maps, rule)
    defect = ~np.isfinite(scores) | (scores > profile.threshold)
    return {"features": x, "dist": dist, "maps": maps, "scores": scores, "defect": defect}


# ---- enrollment loops the core runs (careg_edge.estimators) -----------------------

def gaussian_factor(feats, eps):
    """[N, P, D] -> (mean [P, D], packed L with L L^T = inv(cov + eps I)): NumPy inv +
    Cholesky of the symmetrised precision, float64."""
    n, p, d = feats.shape
    mean = feats.mean(axis=0, dtype=np.float64)
    xt = np.ascontiguousarray((feats.astype(np.float64) - mean).transpose(1, 0, 2))
    cov = np.swapaxes(xt, 1, 2) @ xt / max(n - 1, 1) + eps * np.eye(d)
    prec = np.linalg.inv(cov)
    L = np.linalg.cholesky(0.5 * (prec + np.swapaxes(prec, 1, 2)))
    rows, cols = np.tril_indices(d)
    return mean, L[:, rows, cols]


def greedy_coreset(z, m, first):
    """Greedy k-centre on rows of z (no projection), float32 like the core."""
    z = np.asarray(z, np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    idx = np.empty(m, np.int64)
    idx[0] = first
    mind = np.full(len(z), np.inf, np.float32)
    for t in range(m):
        d = sq - 2.0 * (z @ z[idx[t]]) + sq[idx[t]]
        np.minimum(mind, d, out=mind)
        mind[idx[t]] = 0.0
        if t + 1 < m:
            idx[t + 1] = int(np.argmax(mind))
    return idx, float(np.sqrt(max(float(mind.max()), 0.0)))
