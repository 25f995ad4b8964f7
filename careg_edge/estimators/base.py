"""What every estimator does: `fit(features) -> state` (the profile's tensors) and
`params` (what scoring needs, e.g. PatchCore's search). Features are [N, P, D]
float32 on a (grid_h, grid_w) grid (P = grid_h * grid_w, row-major). Scoring is
not here: the compiled road scores every estimator (careg_edge.scoring,
cpp/src/road_score.cpp), for Python and the C API alike; fitting is NumPy.

A subclass also declares what the rest of the package asks about it through the
registry, so that no other module keeps a per-estimator table: its profile tensors
(`profile_tensors`, `check_shapes`), how they reach the compiled Scorer
(`scorer_args`), the GPU road's kernel that scores them (`gpu_kernel`, a key of
careg_edge.gpu.distances.KERNELS) and whose tail-prior records stand in for its own
(`tail_prior_fallback`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

@dataclass
class Fitted:
    tensors: Dict[str, np.ndarray]          # what goes into the profile
    stats: dict = field(default_factory=dict)   # sizes and timings for the profile JSON
    groups: Optional[np.ndarray] = None     # per-state-row source group (for leave-one-out)


class Estimator:
    name = "base"
    # feature layout this estimator wants (features.FeatureSpec defaults)
    grid_stride = 4
    aggregate = False
    # profile tensor name -> allowed dtypes (little-endian numpy spellings); the
    # optional input transforms (channel_index, projection) are checked by the profile
    profile_tensors: Dict[str, Tuple[str, ...]] = {}
    gpu_kernel = ""                         # careg_edge.gpu.distances.KERNELS key
    tail_prior_fallback: Optional[str] = None   # estimator whose prior records to use

    def __init__(self, **params):
        self.params = params

    def input_transform(self, d_in: int, seed: int) -> Dict[str, np.ndarray]:
        """Fixed, data-independent tensors applied before fitting (channel_index/projection)."""
        return {}

    @classmethod
    def check_shapes(cls, tensors: Dict[str, np.ndarray], positions: int) -> Optional[str]:
        """What is inconsistent about the state tensors on a grid of `positions` cells
        (one phrase for the profile's error), or None. Dtypes are already checked."""
        raise NotImplementedError

    @classmethod
    def scorer_args(cls, tensors: Dict[str, np.ndarray], params: dict) -> dict:
        """Keyword arguments of the compiled core's `Scorer` for this state: `tensors`
        (contiguous, in the dtypes its binding accepts) and any scoring options."""
        raise NotImplementedError

    def fit(self, feats: np.ndarray, grid: Tuple[int, int], groups: np.ndarray,
            seed: int = 0) -> Fitted:
        raise NotImplementedError

    def fit_without(self, feats, grid, groups, fitted: Fitted, held_out, seed: int = 0) -> Fitted:
        """State fitted without the rows of `held_out` group (leave-one-out calibration)."""
        keep = groups != held_out
        return self.fit(feats[keep], grid, groups[keep], seed)
