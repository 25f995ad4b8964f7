"""Encoder outputs -> features [B, P, D] on the device: the core's assembly
(cpp/src/road_assemble.cpp) in torch.

Per stage k the fixed input transform (channel subset or projection) is applied at
the stage's own resolution, then the map is resampled onto the scoring grid through
theta_inv[:, k] (unwarp) or theta_inv[:, k]∘theta[:, 2] (registered); PatchCore then
averages each cell with its 3x3 neighbourhood, edges replicated. Output channels
come in the core's order: grouped by stage, channel_index order within a stage.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CaregError
from .sample import affine_sample, compose

FEATS = ("feat1", "feat2", "feat3")
NAMES = FEATS + ("theta", "theta_inv")


def check_outputs(out: Dict[str, torch.Tensor], channels) -> int:
    """Shapes, then finiteness, with the core's messages; returns the batch size."""
    for n in NAMES:
        if n not in out:
            raise CaregError(f"encoder outputs lack '{n}'")
    b = int(out["feat1"].shape[0])
    for k, n in enumerate(FEATS):
        a = out[n]
        if a.dim() != 4:
            raise CaregError(f"{n} must be a 4-d float32 array, got {a.dim()} dimension(s)")
        if a.shape[0] != b:
            raise CaregError(f"{n} has batch {a.shape[0]}, feat1 has {b}")
        if a.shape[1] != channels[k]:
            raise CaregError(f"encoder output {n} has {a.shape[1]} channels, the profile expects "
                             f"{channels[k]}: wrong model for this profile")
        if a.shape[2] == 0 or a.shape[3] == 0:
            raise CaregError(f"encoder output {n} has an empty map {a.shape[2]}x{a.shape[3]}")
    for n in ("theta", "theta_inv"):
        if tuple(out[n].shape) != (b, 3, 2, 3):
            raise CaregError(f"{n} must be [B, 3, 2, 3] with B = {b}, got {list(out[n].shape)}")
    if b:
        _check_finite(out, b)
    return b


def all_finite(x: torch.Tensor) -> torch.Tensor:
    """[B] bool per image: sum(x * 0) is NaN exactly when some entry is NaN or inf
    (two kernels, no overflow of large finite values; the core's all_finite)."""
    return ~torch.isnan((x.reshape(x.shape[0], -1) * 0).sum(1))


def _check_finite(out: Dict[str, torch.Tensor], b: int) -> None:
    # one [5, B] flag transfer to the host; counts only on the way to an error
    ok = torch.stack([all_finite(out[n]) for n in NAMES]).cpu()
    if bool(ok.all()):
        return
    bad = torch.stack([(~torch.isfinite(out[n])).reshape(b, -1).sum(1) for n in NAMES]).cpu()
    for i in range(b):        # the core's order: per image, feat1..3 then theta, theta_inv
        for j, n in enumerate(NAMES):
            c = int(bad[j, i])
            if c and j < 3:
                raise CaregError(f"{n}[{i}]: {c} non-finite value(s) (NaN/inf) in the encoder output; "
                                 "the encoder or its input is broken")
            if c:
                raise CaregError(f"{n}[{i}]: non-finite value(s) (NaN/inf) in the encoder output")


class Assembly:
    """A profile's feature layout with its transform tensors on the device."""

    def __init__(self, spec, transform: Dict[str, np.ndarray], device):
        self.channels = tuple(int(c) for c in spec.channels)
        self.grid = tuple(int(g) for g in spec.grid)
        self.mode, self.aggregate = spec.mode, bool(spec.aggregate)
        ci: Optional[np.ndarray] = transform.get("channel_index")
        proj: Optional[np.ndarray] = transform.get("projection")
        start = np.cumsum((0,) + self.channels)
        self.select: List[Optional[torch.Tensor]] = [None, None, None]
        self.project: List[Optional[torch.Tensor]] = [None, None, None]
        for k in range(3):
            if proj is not None:
                w = np.asarray(proj, np.float32)[start[k]:start[k + 1]]
                self.project[k] = torch.from_numpy(np.ascontiguousarray(w)).to(device)
            elif ci is not None:
                ci = np.asarray(ci, np.int64)
                mine = ci[(ci >= start[k]) & (ci < start[k + 1])] - start[k]
                self.select[k] = torch.from_numpy(mine).to(device)
        self.dim = (proj.shape[1] if proj is not None else
                    len(ci) if ci is not None else sum(self.channels))

    def _thetas(self, out) -> torch.Tensor:
        """[B, 3, 2, 3] sampling thetas of the three stages."""
        inv = out["theta_inv"]
        return inv if self.mode == "unwarp" else compose(inv, out["theta"][:, 2:3])

    def __call__(self, out: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Checked encoder outputs (check_outputs) -> features [B, P, D] float32."""
        gh, gw = self.grid
        thetas = self._thetas(out)
        acc, parts = None, []
        for k, n in enumerate(FEATS):
            f = out[n]
            if self.project[k] is not None:
                f = torch.einsum("bchw,cd->bdhw", f, self.project[k])
            elif self.select[k] is not None:
                if self.select[k].numel() == 0:
                    continue
                f = f.index_select(1, self.select[k])
            g = affine_sample(f.contiguous(), thetas[:, k], gh, gw)
            if self.project[k] is not None:
                acc = g if acc is None else acc + g
            else:
                parts.append(g)
        x = acc if acc is not None else torch.cat(parts, dim=1)      # [B, D, gh, gw]
        if self.aggregate:
            x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return x.flatten(2).transpose(1, 2).contiguous()
