"""Registered feature maps (feat1..3, theta, theta_inv) -> features [B, P, D].

The three maps are brought to one grid of stride `grid_stride` (4 = 56x56 at 224)
and concatenated along channels. The estimator's fixed input transform is applied
per stage *before* resampling: a channel subset (`channel_index`, indices into
the concatenation feat1|feat2|feat3) or a projection (`projection` [Din, D]). Both
are linear across channels and bilinear resampling is linear across positions,
so the order does not change the result, only the cost (the full 1792-channel
resnet50v2 concatenation at 56x56 is never materialised).

Localisation modes:
  "unwarp"      each map goes back to image coordinates through theta_inv[:, k]
                before scoring (as the RegAD code does); the heatmap needs no warp.
  "registered"  each map goes to the stage-3 registered frame (theta_inv[:, k]
                composed with theta[:, 2]); scores live in that frame and the
                heatmap is unwarped through theta_inv[:, 2] (inverse-affine unwarp).
With identity STNs (ImageNet backbones) both modes give the same features.

PatchCore additionally averages each position with its 3x3 neighbourhood
(edge cells replicate the border rather than pad zeros).

Dimensions per backbone (concatenation feat1|feat2|feat3):
  resnet18 64+128+256 = 448, wide_resnet50_2 / resnet50v2 256+512+1024 = 1792,
  efficientnet_lite0 24+40+112 = 176, mobilenet_v2 24+32+96 = 152.
Default subsets (seeded with the enroll seed, stored in the profile as
channel_index): PaDiM 100 channels, PatchCore 256; OrthoAD projects all Din
channels to 100 with a seeded semi-orthogonal matrix.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from . import _core
from .errors import UserInputError

MODES = ("unwarp", "registered")
_ID = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


@dataclass(frozen=True)
class FeatureSpec:
    backbone: str
    channels: Tuple[int, int, int]
    input_size: Tuple[int, int]
    grid_stride: int = 4
    mode: str = "unwarp"
    aggregate: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserInputError(f"localisation: {self.mode!r} is not one of {', '.join(MODES)}")

    @property
    def grid(self) -> Tuple[int, int]:
        return (self.input_size[0] // self.grid_stride, self.input_size[1] // self.grid_stride)

    @property
    def d_in(self) -> int:
        return int(sum(self.channels))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["input_size"] = list(self.channels), list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(d["backbone"], tuple(d["channels"]), tuple(d["input_size"]),
                   int(d["grid_stride"]), d["mode"], bool(d["aggregate"]))


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine a∘b (apply b, then a)."""
    a3 = np.concatenate([a, np.broadcast_to([[0, 0, 1]], a.shape[:-2] + (1, 3))], axis=-2)
    b3 = np.concatenate([b, np.broadcast_to([[0, 0, 1]], b.shape[:-2] + (1, 3))], axis=-2)
    return np.ascontiguousarray((a3 @ b3)[..., :2, :], np.float32)


def stage_thetas(out: Dict[str, np.ndarray], mode: str) -> list:
    """Per stage, the theta that samples its map onto the scoring frame."""
    inv = out["theta_inv"]
    if mode == "unwarp":
        return [np.ascontiguousarray(inv[:, k], np.float32) for k in range(3)]
    return [_compose(inv[:, k], out["theta"][:, 2]) for k in range(3)]


def assemble(out: Dict[str, np.ndarray], spec: FeatureSpec, transform: Dict[str, np.ndarray],
             threads: int = 0) -> np.ndarray:
    """Runtime outputs -> [B, P, D] float32 features for the estimator."""
    gh, gw = spec.grid
    thetas = stage_thetas(out, spec.mode)
    ci: Optional[np.ndarray] = transform.get("channel_index")
    proj: Optional[np.ndarray] = transform.get("projection")
    parts, start, acc = [], 0, None
    for k, name in enumerate(("feat1", "feat2", "feat3")):
        f = out[name]
        c = f.shape[1]
        if c != spec.channels[k]:
            raise UserInputError(f"encoder output {name} has {c} channels, the profile expects "
                                 f"{spec.channels[k]}: wrong model for this profile")
        if ci is not None:
            sel = ci[(ci >= start) & (ci < start + c)] - start
            f = f[:, sel]
        elif proj is not None:
            f = np.einsum("bchw,cd->bdhw", f, proj[start:start + c], optimize=True)
        start += c
        if f.shape[1] == 0:
            continue
        g = _core.affine_sample(np.ascontiguousarray(f, np.float32), thetas[k], gh, gw, threads)
        if proj is not None:
            acc = g if acc is None else acc + g
        else:
            parts.append(g)
    feats = acc if proj is not None else np.concatenate(parts, axis=1)
    if spec.aggregate:
        feats = aggregate3x3(feats)
    b, d = feats.shape[:2]
    return np.ascontiguousarray(feats.reshape(b, d, gh * gw).transpose(0, 2, 1))


def aggregate3x3(f: np.ndarray) -> np.ndarray:
    """Mean over each 3x3 neighbourhood, border replicated. f [B, D, h, w]."""
    p = np.pad(f, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = f.shape[2:]
    acc = np.zeros_like(f)
    for dy in range(3):
        for dx in range(3):
            acc += p[:, :, dy:dy + h, dx:dx + w]
    return acc / np.float32(9.0)


def identity_theta(b: int) -> np.ndarray:
    return np.broadcast_to(_ID, (b, 3, 2, 3)).copy()
