"""Decoded RGB uint8 images -> the encoder's float32 NCHW input on the device:
careg_edge/preprocess.py (resize, then (rgb * scale - mean) / std) in torch.

The resize reproduces OpenCV's on uint8 images: area averaging when shrinking
(INTER_AREA: each output pixel is the coverage-weighted mean of the source pixels
its cell overlaps, as two small weight matrices), bilinear when enlarging
(INTER_LINEAR, align_corners=False), each rounded back to uint8 like OpenCV. Results
equal the host's within one grey level on a few pixels (OpenCV rounds in fixed point
in places; see tests/test_gpu_road.py). An image that shrinks along one axis and
grows along the other takes OpenCV's own mixed INTER_AREA path: it is resized on the
host by preprocess.resize, then uploaded.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import preprocess as host
from .precision import full_fp32


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


def _resize_group(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """x [n, 3, H, W] float32 of uint8 values, all shrinking or all growing."""
    (h, w), (H, W) = size, x.shape[2:]
    if H >= h and W >= w:
        wy = torch.from_numpy(area_weights(H, h)).float().to(x.device)
        wx = torch.from_numpy(area_weights(W, w)).float().to(x.device)
        with full_fp32():
            y = wy @ x @ wx.T
        if H == 2 * h and W == 2 * w:       # OpenCV's 2x2 kernel rounds halves up
            return torch.floor(y + 0.5).clamp_(0, 255)
        return torch.round(y).clamp_(0, 255)
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return torch.round(y).clamp_(0, 255)


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
        batch = torch.from_numpy(np.stack([staged[i] for i in idx])).to(device)
        x = batch.permute(0, 3, 1, 2).float()
        if tuple(shape) != size:
            x = _resize_group(x, size)
        out[idx] = (x * scale - mean) / std
    return out
