"""Spatial transformer after each stage (CAReg / RegAD), plus the affine algebra.

θ follows PyTorch's affine_grid convention (DEVELOPERS.md): an output pixel at
normalised p = (x, y) (align_corners=False) samples the input at θ·[p, 1]. The
sampling grid is computed explicitly from θ and a constant base grid, then
F.grid_sample warps: this exports to ONNX GridSample (opset >= 16) without the
AffineGrid op that TensorRT's parser may reject.

Modes (paper Table XI). Each raw parameter u goes through a bounded map, so a
transform can never push the whole map off the image (with border padding that
would make every registered map the same constant smear: a collapse the
registration loss rewards, seen in practice with unbounded translations):
  rotation        α (unbounded: a rotation cannot collapse)
  scale           s = 2^(MAX_LOG2_SCALE·tanh u)        in [0.71, 1.41]
  translation     t = MAX_SHIFT·tanh u                  (normalised coords)
  shear           k = MAX_SHEAR·tanh u
  rotation_scale  θ = R(α)·diag(sx, sy)                 3 params (default)
  rotation        θ = R(α)                              1 param
  translation     θ = [[1, 0, tx], [0, 1, ty]]          2 params
  scale           θ = diag(sx, sy)                      2 params
  shear           θ = [[1, kx, 0], [ky, 1, 0]]          2 params
  affine          θ = [R(α)·[[1, k], [0, 1]]·diag(sx, sy) | t]   6 params (α, k, sx, sy, tx, ty)
  identity        no localisation net, no warp (ImageNet baseline)
The localisation net's last FC starts at zero weight and zero bias, and u = 0
is the identity in every mode, so training starts from the identity warp.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MODE_INIT = {  # raw parameters of the identity transform (last-FC bias)
    "affine": (0.0,) * 6,
    "rotation_scale": (0.0,) * 3,
    "rotation": (0.0,),
    "translation": (0.0, 0.0),
    "scale": (0.0, 0.0),
    "shear": (0.0, 0.0),
    "identity": (),
}
MAX_LOG2_SCALE, MAX_SHIFT, MAX_SHEAR = 0.5, 0.3, 0.3
STN_MODES = tuple(MODE_INIT)
PADDING_MODE = "border"  # DEVELOPERS.md border policy: zeros would invent edge anomalies


def _scale(u):
    return torch.exp((math.log(2.0) * MAX_LOG2_SCALE) * torch.tanh(u))


def params_to_theta(p: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, n] raw parameters -> θ [B, 2, 3] (elementwise ops only: ONNX-safe)."""
    one, zero = torch.ones_like(p[:, :1]), torch.zeros_like(p[:, :1])
    if mode in ("rotation_scale", "rotation", "affine"):
        c, s = torch.cos(p[:, :1]), torch.sin(p[:, :1])
        if mode == "rotation":
            rows = [c, -s, zero, s, c, zero]
        elif mode == "rotation_scale":
            sx, sy = _scale(p[:, 1:2]), _scale(p[:, 2:3])
            rows = [c * sx, -s * sy, zero, s * sx, c * sy, zero]
        else:
            k = MAX_SHEAR * torch.tanh(p[:, 1:2])
            sx, sy = _scale(p[:, 2:3]), _scale(p[:, 3:4])
            tx, ty = MAX_SHIFT * torch.tanh(p[:, 4:5]), MAX_SHIFT * torch.tanh(p[:, 5:6])
            rows = [c * sx, (c * k - s) * sy, tx, s * sx, (s * k + c) * sy, ty]
    elif mode == "translation":
        t = MAX_SHIFT * torch.tanh(p)
        rows = [one, zero, t[:, :1], zero, one, t[:, 1:2]]
    elif mode == "scale":
        rows = [_scale(p[:, :1]), zero, zero, zero, _scale(p[:, 1:2]), zero]
    elif mode == "shear":
        k = MAX_SHEAR * torch.tanh(p)
        rows = [one, k[:, :1], zero, k[:, 1:2], one, zero]
    else:
        raise ValueError(f"unknown STN mode {mode!r}")
    return torch.cat(rows, dim=1).reshape(-1, 2, 3)


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """θ of "apply b, then a" on coordinates: p -> a·[b·[p,1], 1]. [...,2,3] each."""
    lin = a[..., :, :2] @ b[..., :, :2]
    t = a[..., :, :2] @ b[..., :, 2:] + a[..., :, 2:]
    return torch.cat([lin, t], dim=-1)


def invert(theta: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of [..., 2, 3] affines: 2x2 adjugate / det, t' = -A⁻¹t."""
    a, b, tx = theta[..., 0, 0], theta[..., 0, 1], theta[..., 0, 2]
    c, d, ty = theta[..., 1, 0], theta[..., 1, 1], theta[..., 1, 2]
    r = 1.0 / (a * d - b * c)
    ia, ib, ic, id_ = d * r, -b * r, -c * r, a * r
    row0 = torch.stack([ia, ib, -(ia * tx + ib * ty)], dim=-1)
    row1 = torch.stack([ic, id_, -(ic * tx + id_ * ty)], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def base_grid(h: int, w: int) -> torch.Tensor:
    """[h*w, 3] homogeneous pixel-centre coordinates (x, y, 1), align_corners=False."""
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(h * w)], dim=1)


def warp(x: torch.Tensor, theta: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear resample x [B,C,h,w] at θ·grid (grid = base_grid(h, w))."""
    b, _, h, w = x.shape
    g = (grid.unsqueeze(0) @ theta.transpose(1, 2)).reshape(b, h, w, 2)
    return F.grid_sample(x, g, mode="bilinear", padding_mode=PADDING_MODE, align_corners=False)


class STN(nn.Module):
    """Localisation net on one stage's map -> θ, then the warp. The FC input size
    follows from the map size, fixed at construction (as in RegAD)."""

    def __init__(self, channels: int, size, mode: str = "rotation_scale", hidden: int = 1024):
        super().__init__()
        if mode not in MODE_INIT:
            raise ValueError(f"unknown STN mode {mode!r}; choose one of {', '.join(STN_MODES)}")
        h, w = size
        self.mode, self.size = mode, (h, w)
        self.register_buffer("grid", base_grid(h, w), persistent=False)
        if mode == "identity":
            return
        self.loc = nn.Sequential(
            nn.Conv2d(channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2, 2))
        if h < 4 or w < 4:
            raise ValueError(f"stage map {h}x{w} too small for the STN; use a larger input size")
        flat = 16 * (h // 4) * (w // 4)  # two floor-halving max-pools
        self.fc = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(),
                                nn.Linear(hidden, len(MODE_INIT[mode])))
        self._identity_output()

    @torch.no_grad()
    def _identity_output(self) -> None:
        nn.init.zeros_(self.fc[2].weight)
        self.fc[2].bias.copy_(torch.tensor(MODE_INIT[self.mode]))

    @torch.no_grad()
    def reset_identity(self) -> None:
        """Fresh localisation net whose output is the identity (as at construction):
        the way back for an STN whose weights are no longer finite."""
        if self.mode == "identity":
            return
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        self._identity_output()

    @torch.no_grad()
    def shrink_to_identity(self, keep: float = 0.5) -> None:
        """Move the raw output towards the identity's: last-FC weight × keep, bias
        to init + keep·(bias − init). Every transform gets `keep` of its raw size."""
        if self.mode == "identity":
            return
        init = torch.tensor(MODE_INIT[self.mode], dtype=self.fc[2].bias.dtype,
                            device=self.fc[2].bias.device)
        self.fc[2].weight.mul_(keep)
        self.fc[2].bias.copy_(init + keep * (self.fc[2].bias - init))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "identity":
            eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=x.dtype, device=x.device)
            return eye.expand(x.shape[0], 2, 3)
        return params_to_theta(self.fc(self.loc(x).flatten(1)), self.mode)

    def forward(self, x: torch.Tensor):
        """-> (registered x, θ of this stage [B,2,3])."""
        theta = self.theta(x)
        if self.mode == "identity":
            return x, theta
        return warp(x, theta, self.grid), theta
