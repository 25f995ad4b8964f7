"""OrthoAD: features projected by a seeded random semi-orthogonal W (Din x D'), then a
Gaussian per position in D' dimensions (a low-rank Gaussian of the full features).
W^T W = I, so the projection keeps distances inside its span; the profile stores W
as `projection` and the scorer applies it before the Mahalanobis distance.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .base import Estimator, Fitted
from .padim import gaussian_factor


def semi_orthogonal(d_in: int, d: int, seed: int) -> np.ndarray:
    """Din x D matrix with orthonormal columns (QR of a seeded Gaussian matrix)."""
    g = np.random.default_rng(seed).standard_normal((d_in, min(d, d_in)))
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))).astype(np.float32)  # sign fix: unique Haar sample


class OrthoAD(Estimator):
    name = "orthoad"

    def __init__(self, d: int = 100, eps: float = 0.01, fp16: bool = False, **_):
        super().__init__(d=d, eps=eps, fp16=fp16)
        self.d, self.eps, self.fp16 = d, eps, fp16

    def input_transform(self, d_in, seed):
        return {"projection": semi_orthogonal(d_in, self.d, seed)}

    def fit(self, feats, grid, groups, seed=0):
        mean, fac = gaussian_factor(feats, self.eps, self.fp16)
        return Fitted({"mean": mean, "precision_factor": fac},
                      {"n_samples": int(feats.shape[0]), "dim": int(feats.shape[2])})

    def score(self, feats, tensors, grid, threads=0):
        d = _core.mahalanobis(np.ascontiguousarray(feats, np.float32), tensors["mean"],
                              tensors["precision_factor"], threads)
        return d, None
