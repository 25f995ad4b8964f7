"""PaDiM: a Gaussian per feature position, Mahalanobis distance (paper Eq. 9).

The profile stores the mean [P, D] and a packed lower-triangular factor L of the
precision (precision = L L^T, row-major packing L[i, j] at i(i+1)/2 + j), fp32 or
fp16: D(D+1)/2 numbers per position instead of the D x D float32 inverse the
RegAD code keeps, and the scorer needs only a triangular mat-vec per position.
Covariances and factors are computed in float64, in the compiled core.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from ..errors import UserInputError
from .base import Estimator, Fitted

def channel_subset(d_in: int, d: int, seed: int) -> np.ndarray:
    """Fixed seeded random channel subset (PaDiM's random dimensionality reduction)."""
    if d >= d_in:
        return np.arange(d_in, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(d_in, d, replace=False)).astype(np.int64)


def gaussian_factor(feats: np.ndarray, eps: float, half: bool = False):
    """[N, P, D] -> (mean [P, D] f32, packed precision factor [P, D(D+1)/2]).

    In the compiled core (float64 inside; 2.5x NumPy's batched inv + cholesky at K=8
    with augmentation on 2 cores, bench/bench_core.py "fit" rows); the NumPy
    reference is tests/reference.py::gaussian_factor."""
    mean, fac = _core.gaussian_factor(np.ascontiguousarray(feats, np.float32), float(eps))
    return mean, fac.astype(np.float16) if half else fac


class PaDiM(Estimator):
    name = "padim"
    profile_tensors = {"mean": ("<f4",), "precision_factor": ("<f4", "<f2")}
    gpu_kernel = "mahalanobis"

    @classmethod
    def check_shapes(cls, tensors, positions):
        mean, fac, P = tensors["mean"], tensors["precision_factor"], positions
        if mean.ndim != 2 or mean.shape[0] != P:
            return f"mean shape {mean.shape}, grid has {P} positions"
        D = mean.shape[1]
        if fac.shape != (P, D * (D + 1) // 2):
            return f"precision_factor shape {fac.shape}, expected {(P, D * (D + 1) // 2)}"
        return None

    @classmethod
    def scorer_args(cls, tensors, params):
        f = tensors["precision_factor"]
        return {"tensors": {"mean": np.ascontiguousarray(tensors["mean"], np.float32),
                            "precision_factor": np.ascontiguousarray(
                                f, np.float16 if f.dtype == np.float16 else np.float32)}}

    def __init__(self, d: int = 100, eps: float = 0.01, fp16: bool = False, **_):
        if eps <= 0:
            raise UserInputError(f"eps: must be > 0 (got {eps}); it keeps covariances invertible")
        super().__init__(d=d, eps=eps, fp16=fp16)
        self.d, self.eps, self.fp16 = d, eps, fp16

    def input_transform(self, d_in, seed):
        return {"channel_index": channel_subset(d_in, self.d, seed)}

    def fit(self, feats, grid, groups, seed=0):
        mean, fac = gaussian_factor(feats, self.eps, self.fp16)
        return Fitted({"mean": mean, "precision_factor": fac},
                      {"n_samples": int(feats.shape[0]), "dim": int(feats.shape[2])})
