"""Affine resampling with the project's theta convention (DEVELOPERS.md, "Geometry
convention"): bilinear, align_corners=False, border padding -- the core's
affine_sample (cpp/src/affine.cpp) in torch.

affine_grid builds the sampling grid with a matmul: callers run under
precision.full_fp32 (GpuRoad.run does), since TF32 would round the grid to ~1e-3 and
move sample points by a tenth of a pixel.
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


def affine_sample(src: torch.Tensor, theta: Optional[torch.Tensor], out_h: int,
                  out_w: int) -> torch.Tensor:
    """src [B, C, h, w] -> [B, C, out_h, out_w]; theta None = bilinear resize."""
    b, c = src.shape[:2]
    if theta is None:
        theta = identity(b, src.device)
    grid = F.affine_grid(theta.float(), [b, c, out_h, out_w], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
