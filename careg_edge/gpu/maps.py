"""The anomaly map and the image score on the device: the core's anomaly_map,
gaussian_blur and image-score rules (cpp/src/anomaly_map.cpp, blur.cpp,
road_score.cpp) in torch.

Unwarp: bilinear upsampling of the grid distances to the profile's image size,
through the stage-3 theta_inv in registered mode (border padding). Blur: separable,
taps of radius ceil(4 sigma) normalised in float64 and rounded to float32 like the
core's, border reflected half-sample (d c b a | a b c d: scipy "reflect", which
torch's own "reflect" padding is not). Rules: max; mean; top<P>% = mean of the n = max(1, round(N*P/100))
largest values (ties to even), summed in float64. A NaN anywhere in a map makes its
score NaN.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CaregError
from .sample import affine_sample


def gaussian_taps(sigma: float) -> List[float]:
    """w[0..r], w[t] the weight at offset +-t, as float32 values (blur.cpp)."""
    if not (math.isfinite(sigma) and 0.0 <= sigma <= 1000.0):
        raise CaregError(f"gaussian blur: sigma must be finite and in [0, 1000], got {sigma}")
    r = int(math.ceil(4.0 * sigma))
    w = [1.0 if r == 0 else math.exp(-(t * t) / (2.0 * sigma * sigma)) for t in range(r + 1)]
    total = w[0] + 2.0 * sum(w[1:])
    return [float(np.float32(v / total)) for v in w]


def reflect_index(i: int, n: int) -> int:
    """Half-sample reflection of any integer index into [0, n)."""
    m = i % (2 * n)
    return m if m < n else 2 * n - 1 - m


def blur_matrix(taps: Sequence[float], n: int) -> np.ndarray:
    """[n, n] float64: row y holds the taps of output y at their reflected sources."""
    k = np.zeros((n, n))
    r = len(taps) - 1
    for y in range(n):
        for t in range(-r, r + 1):
            k[y, reflect_index(y + t, n)] += taps[abs(t)]
    return k


class Blur:
    """Separable Gaussian blur of [B, H, W] maps with fixed H, W and sigma, as two
    matmuls with banded matrices that hold the border reflection: two kernel launches
    instead of two per tap, the same sums up to float32 rounding order. A non-finite
    value makes every output whose (2r+1)^2 window reaches it NaN, as the core's sums
    do (where the core would keep a lone +inf as inf, this gives NaN: a defect either
    way)."""

    def __init__(self, sigma: float, h: int, w: int, device):
        taps = gaussian_taps(sigma)
        self.r = len(taps) - 1
        self.rows = torch.from_numpy(blur_matrix(taps, h)).float().to(device)
        self.cols_t = torch.from_numpy(blur_matrix(taps, w).T.copy()).float().to(device)

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        if self.r == 0:
            return maps.clone()
        finite = torch.isfinite(maps)
        out = self.rows @ torch.where(finite, maps, torch.zeros((), device=maps.device)) @ self.cols_t
        # every tap is > 0 (the last one is exp(-8) of the centre): blurring the mask of
        # non-finite values is > 0 exactly where the core's sums would meet one
        reach = (self.rows @ (~finite).float() @ self.cols_t) > 0
        return out.masked_fill_(reach, float("nan"))


def check_invertible(theta_inv3: torch.Tensor) -> None:
    """The core refuses a degenerate heatmap unwarp (|det| <= 1e-8), naming the image."""
    t = theta_inv3.double()
    det = (t[:, 0, 0] * t[:, 1, 1] - t[:, 0, 1] * t[:, 1, 0]).cpu()
    for b, d in enumerate(det.tolist()):
        if not abs(d) > 1e-8:
            raise CaregError(f"anomaly_map: theta_inv[{b}] is not invertible (det {d:g}); the "
                             "registration produced a degenerate transform")


def unwarp(dist: torch.Tensor, theta_inv3: Optional[torch.Tensor], size: Tuple[int, int]) -> torch.Tensor:
    """Grid distances [B, gh, gw] -> [B, H, W] in the image frame (not yet blurred)."""
    return affine_sample(dist[:, None], theta_inv3, size[0], size[1])[:, 0]


def top_count(n: int, percent: float) -> int:
    """max(1, round(n * percent / 100)), ties to even (Python's round = the core's)."""
    return min(n, max(1, round(n * percent / 100.0)))


def image_scores(maps: torch.Tensor, rule: str, percent: float) -> torch.Tensor:
    """maps [B, H, W] -> [B] float64 per rule ("max", "mean", "top")."""
    flat = maps.reshape(maps.shape[0], -1)
    if rule == "max":
        return flat.amax(1).double()                   # amax propagates NaN
    n = top_count(flat.shape[1], percent)
    vals = flat if n == flat.shape[1] else flat.topk(n, dim=1).values
    out = vals.double().sum(1) / n
    return torch.where(torch.isnan(flat).any(1), torch.full_like(out, float("nan")), out)


def resize_each(maps: torch.Tensor, sizes: Sequence[Tuple[int, int]]) -> List[np.ndarray]:
    """Each map [H, W] bilinearly to its image's own size (align_corners=False, border
    = the core's resize_map), on the device, one call per distinct size."""
    out: List[Optional[np.ndarray]] = [None] * len(sizes)
    for size in dict.fromkeys(tuple(map(int, s)) for s in sizes):
        idx = [i for i, s in enumerate(sizes) if tuple(map(int, s)) == size]
        sel = maps[idx][:, None]
        if tuple(sel.shape[2:]) != size:
            sel = F.interpolate(sel, size=size, mode="bilinear", align_corners=False)
        for i, a in zip(idx, sel[:, 0].cpu().numpy()):
            out[i] = a
    return out
