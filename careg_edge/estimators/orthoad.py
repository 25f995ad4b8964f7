"""OrthoAD: features projected by a seeded random semi-orthogonal W (Din x D'), then a
Gaussian per position in D' dimensions (a low-rank Gaussian of the full features).
W^T W = I, so the projection keeps distances inside its span; the profile stores W
as `projection` and the scorer applies it before the Mahalanobis distance.
"""
from __future__ import annotations

import numpy as np

from .padim import PaDiM


def semi_orthogonal(d_in: int, d: int, seed: int) -> np.ndarray:
    """Din x D matrix with orthonormal columns (QR of a seeded Gaussian matrix)."""
    g = np.random.default_rng(seed).standard_normal((d_in, min(d, d_in)))
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))).astype(np.float32)  # sign fix: unique Haar sample


class OrthoAD(PaDiM):
    """PaDiM's Gaussian fit and scorer on projected instead of sub-sampled channels."""

    name = "orthoad"
    profile_tensors = dict(PaDiM.profile_tensors, projection=("<f4",))
    tail_prior_fallback = "padim"   # PaDiM's Gaussian on other features

    @classmethod
    def check_shapes(cls, tensors, positions):
        bad = super().check_shapes(tensors, positions)
        proj, D = tensors["projection"], tensors["mean"].shape[1]
        if bad is None and (proj.ndim != 2 or proj.shape[1] != D):
            return f"projection shape {proj.shape} does not end in D={D}"
        return bad

    def input_transform(self, d_in, seed):
        return {"projection": semi_orthogonal(d_in, self.d, seed)}
