"""Decoded RGB uint8 images -> the encoder's float32 NCHW input on the device:
careg_edge/preprocess.py (resize, then (rgb * scale - mean) / std) in torch.

The resize reproduces OpenCV's on uint8 images: area averaging when shrinking
(INTER_AREA: each output pixel is the coverage-weighted mean of the source pixels
its cell overlaps, as two small weight matrices, rounded back to uint8), bilinear
when enlarging (INTER_LINEAR in OpenCV's 11-bit fixed point). Results equal the
host's within one grey level on under 1 % of the pixels (rounding of exact halves,
OpenCV's vector kernels; see tests/test_gpu_road.py). An image that shrinks along one axis and
grows along the other takes OpenCV's own mixed INTER_AREA path: it is resized on the
host by preprocess.resize, then uploaded.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from .. import preprocess as host
from .precision import full_fp32
from .transfer import upload


def area_weights(src: int, dst: int) -> np.ndarray:
    """[dst, src] INTER_AREA weights of one axis (src >= dst), float64, rows sum to 1."""
    scale = src / dst
    w = np.zeros((dst, src))
    for d in range(dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(math.floor(f2), src - 1)
        s1 = min(math.ceil(f1), s2)
        if s1 - f1 > 1e-3:
            w[d, s1 - 1] = (s1 - f1) / cell
        w[d, s1:s2] = 1.0 / cell
        if f2 - s2 > 1e-3:
            w[d, s2] = min(f2 - s2, 1.0, cell) / cell
    return w


def linear_taps(src: int, dst: int):
    """One axis of OpenCV's INTER_LINEAR on uint8 (src <= dst): source indices and
    11-bit fixed-point weights, computed as OpenCV does (float32 offsets, rint)."""
    fx = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    sx = np.floor(fx).astype(np.int64)
    fx = fx - sx.astype(np.float32)
    edge = (sx < 0) | (sx >= src - 1)
    fx[edge] = 0.0
    sx = np.clip(sx, 0, src - 1)
    w0, w1 = np.rint((np.float32(1) - fx) * 2048), np.rint(fx * 2048)
    return sx, np.minimum(sx + 1, src - 1), w0.astype(np.int64), w1.astype(np.int64)


def _linear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """OpenCV's fixed-point bilinear enlargement of uint8 values x [n, 3, H, W] (int32):
    rows then columns in integers, the vertical pass rounded as OpenCV's SIMD kernel
    does ((b*(S >> 4)) >> 16 per row, + 2, >> 2)."""
    dev = x.device
    y0, y1, b0, b1 = (torch.from_numpy(a).to(dev) for a in linear_taps(x.shape[2], size[0]))
    x0, x1, a0, a1 = (torch.from_numpy(a).to(dev) for a in linear_taps(x.shape[3], size[1]))
    s = x.index_select(3, x0).long() * a0 + x.index_select(3, x1).long() * a1
    s0, s1 = s.index_select(2, y0) >> 4, s.index_select(2, y1) >> 4
    out = (((b0[:, None] * s0) >> 16) + ((b1[:, None] * s1) >> 16) + 2) >> 2
    return out.clamp_(0, 255).float()


def _resize_group(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """x [n, 3, H, W] uint8, all shrinking or all growing -> float32 uint8 values."""
    (h, w), (H, W) = size, x.shape[2:]
    if H >= h and W >= w:
        wy = torch.from_numpy(area_weights(H, h)).float().to(x.device)
        wx = torch.from_numpy(area_weights(W, w)).float().to(x.device)
        with full_fp32():
            y = wy @ x.float() @ wx.T
        if H == 2 * h and W == 2 * w:       # OpenCV's 2x2 kernel rounds halves up
            return torch.floor(y + 0.5).clamp_(0, 255)
        return torch.round(y).clamp_(0, 255)
    return _linear(x, size)


def to_input(rgbs: Sequence[np.ndarray], size: Tuple[int, int], meta, device) -> torch.Tensor:
    """RGB uint8 images [H, W, 3] (any sizes) -> float32 [B, 3, h, w] on `device`,
    normalised by the encoder's EncoderMeta. Images of one size go up together."""
    size = (int(size[0]), int(size[1]))
    groups: Dict[Tuple[int, int], List[int]] = {}
    staged: List[np.ndarray] = list(rgbs)
    for i, rgb in enumerate(rgbs):
        H, W = rgb.shape[:2]
        shrinks, grows = H > size[0] or W > size[1], H < size[0] or W < size[1]
        if shrinks and grows:                          # OpenCV's own mixed INTER_AREA path
            staged[i] = host.resize(rgb, size)
        groups.setdefault(staged[i].shape[:2], []).append(i)
    out = torch.empty((len(rgbs), 3) + size, dtype=torch.float32, device=device)
    scale = float(np.float32(meta.scale))
    mean = torch.tensor(np.asarray(meta.mean, np.float32), device=device)[None, :, None, None]
    std = torch.tensor(np.asarray(meta.std, np.float32), device=device)[None, :, None, None]
    for shape, idx in groups.items():
        # one upload per image: stacking on the host first would copy every frame once more
        x = torch.stack([upload(staged[i], device) for i in idx])
        x = x.permute(0, 3, 1, 2)
        x = _resize_group(x, size) if tuple(shape) != size else x.float()
        out[idx] = (x * scale - mean) / std
    return out
