"""Registered feature maps (feat1..3, theta, theta_inv) -> features [B, P, D].

The assembly itself runs in the compiled core (cpp/src/road_assemble.cpp), the same
code the inspection road and the C API run; this module describes it (FeatureSpec)
and calls it. The NumPy reference lives in tests/reference.py.

The three maps are brought to one grid of stride `grid_stride` (4 = 56x56 at 224)
and concatenated along channels. The estimator's fixed input transform is applied
per stage *before* resampling: a channel subset (`channel_index`, indices into
the concatenation feat1|feat2|feat3) or a projection (`projection` [Din, D]). Both
are linear across channels and bilinear resampling is linear across positions,
so the order does not change the result, only the cost (a projection is applied
at each stage's own resolution, before resampling).

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


def layout(spec: FeatureSpec, transform: Dict[str, np.ndarray]) -> "_core.Layout":
    """The compiled core's assembly description of (spec, channel_index/projection)."""
    ci: Optional[np.ndarray] = transform.get("channel_index")
    proj: Optional[np.ndarray] = transform.get("projection")
    return _core.Layout(list(spec.channels), list(spec.input_size), int(spec.grid_stride), spec.mode,
                        bool(spec.aggregate),
                        None if ci is None else np.ascontiguousarray(ci, np.int64),
                        None if proj is None else np.ascontiguousarray(proj, np.float32))


def outputs(out: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The five encoder outputs as C-contiguous float32 (no copy when they already are)."""
    return {k: np.ascontiguousarray(out[k], np.float32)
            for k in ("feat1", "feat2", "feat3", "theta", "theta_inv")}


def assemble(out: Dict[str, np.ndarray], spec: FeatureSpec, transform: Dict[str, np.ndarray],
             threads: int = 0, compiled=None) -> np.ndarray:
    """Runtime outputs -> [B, P, D] float32 features, in the compiled core (the same
    code inspection runs). `compiled`: a prebuilt layout(spec, transform)."""
    return _core.assemble(compiled if compiled is not None else layout(spec, transform),
                          outputs(out), threads)

