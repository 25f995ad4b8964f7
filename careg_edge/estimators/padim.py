"""PaDiM: a Gaussian per feature position, Mahalanobis distance (paper Eq. 9).

The profile stores the mean [P, D] and a packed lower-triangular factor L of the
precision (precision = L L^T, row-major packing L[i, j] at i(i+1)/2 + j), fp32 or
fp16: D(D+1)/2 numbers per position instead of the D x D float32 inverse the
RegAD code keeps, and the scorer needs only a triangular mat-vec per position.
Covariances are computed in float64, in chunks of positions to bound memory.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserInputError
from .base import Estimator, Fitted

CHUNK = 256  # positions per covariance chunk: 256 x D x D float64


def channel_subset(d_in: int, d: int, seed: int) -> np.ndarray:
    """Fixed seeded random channel subset (PaDiM's random dimensionality reduction)."""
    if d >= d_in:
        return np.arange(d_in, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(d_in, d, replace=False)).astype(np.int64)


def gaussian_factor(feats: np.ndarray, eps: float, half: bool = False):
    """[N, P, D] -> (mean [P, D] f32, packed precision factor [P, D(D+1)/2])."""
    n, p, d = feats.shape
    mean = feats.mean(axis=0, dtype=np.float64)
    rows, cols = np.tril_indices(d)
    fac = np.empty((p, len(rows)), np.float16 if half else np.float32)
    for s in range(0, p, CHUNK):
        xc = feats[:, s:s + CHUNK].astype(np.float64) - mean[s:s + CHUNK]
        xt = np.ascontiguousarray(xc.transpose(1, 0, 2))      # [p, n, D]: batched BLAS
        cov = np.swapaxes(xt, 1, 2) @ xt / max(n - 1, 1)
        cov += eps * np.eye(d)
        prec = np.linalg.inv(cov)
        prec = 0.5 * (prec + np.swapaxes(prec, 1, 2))  # exact symmetry for Cholesky
        fac[s:s + CHUNK] = np.linalg.cholesky(prec)[:, rows, cols]
    return mean.astype(np.float32), fac


class PaDiM(Estimator):
    name = "padim"

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
