"""Affine resampling with the project's theta convention (DEVELOPERS.md, "Geometry
convention"): bilinear, align_corners=False, border padding -- the core's
affine_sample (cpp/src/affine.cpp) in torch.

The sampling grid is built here in float64 rather than by F.affine_grid: affine_grid
multiplies with a batched matmul, which TF32 (allowed for speed on a GPU by
torch.set_float32_matmul_precision("high")) would round to ~1e-3, moving sample
points by a tenth of a pixel. grid_sample itself is elementwise.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

_EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def identity(b: int, device) -> torch.Tensor:
    return torch.tensor(_EYE, dtype=torch.float32, device=device).expand(b, 2, 3)


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """2x3 affines a∘b (apply b, then a) [..., 2, 3], in float64 rounded to float32
    like the core's compose (road_assemble.cpp)."""
    a, b = a.double(), b.double()
    lin = a[..., :, :2] @ b[..., :, :2]
    shift = (a[..., :, :2] @ b[..., :, 2:3])[..., 0] + a[..., :, 2]
    return torch.cat([lin, shift[..., None]], dim=-1).float()


def grid(theta: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """theta [B, 2, 3] -> normalised source coordinates [B, out_h, out_w, 2] (x, y)."""
    t = theta.double()
    dev = theta.device
    xs = (2 * torch.arange(out_w, dtype=torch.float64, device=dev) + 1) / out_w - 1
    ys = (2 * torch.arange(out_h, dtype=torch.float64, device=dev) + 1) / out_h - 1
    px, py = xs[None, None, :], ys[None, :, None]

    def row(r):
        return t[:, r, 0, None, None] * px + t[:, r, 1, None, None] * py + t[:, r, 2, None, None]
    return torch.stack([row(0), row(1)], dim=-1).float()


def affine_sample(src: torch.Tensor, theta: Optional[torch.Tensor], out_h: int,
                  out_w: int) -> torch.Tensor:
    """src [B, C, h, w] -> [B, C, out_h, out_w]; theta None = bilinear resize."""
    if theta is None:
        theta = identity(src.shape[0], src.device)
    return F.grid_sample(src, grid(theta, out_h, out_w), mode="bilinear", padding_mode="border",
                         align_corners=False)
