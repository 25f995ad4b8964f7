"""Automatic choice of support augmentations (paper Eq. 6-7).

For each candidate augmentation group we fit a Gaussian per feature position to
the original support features and another to the group's augmented views, and
measure how far apart they are:

  Eq. 6   W_p = ( |mu_o - mu_a|^2 + tr(S_o) + tr(S_a)
                  - 2 tr( (S_a^1/2 S_o S_a^1/2)^1/2 ) )^1/2        (2-Wasserstein)
  Eq. 7   W = sum_p w_p W_p,  w_p = |mu_o,p - mean_q mu_o,q| / sum_p' (...)

w_p is the foreground re-weighting: positions whose mean feature stands out
from the image-wide mean feature (the object) count more than flat background,
which every augmentation leaves alike. Groups whose distance is above the mean
distance over all candidates are dropped (they move the support distribution
too far from what the line produces). KL(aug || orig) and a Jensen-Shannon
estimate (KL of each to the moment-matched mixture, averaged) are alternatives.

To keep this cheap the features are average-pooled to at most 8x8 positions
and the first 64 channels (channels are already a seeded random subset or a
random projection, so the first 64 are a random sample).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from .errors import UserInputError

METHODS = ("wasserstein", "kl", "js")


def pool(feats: np.ndarray, grid: Tuple[int, int], out: int = 8, max_dim: int = 64) -> np.ndarray:
    """[N, P, D] on `grid` -> [N, P', D'] block-averaged to <= out x out positions."""
    n, _, d = feats.shape
    gh, gw = grid
    bh, bw = max(1, -(-gh // out)), max(1, -(-gw // out))
    oh, ow = gh // bh, gw // bw
    f = feats[:, :, :min(d, max_dim)].reshape(n, gh, gw, -1)[:, :oh * bh, :ow * bw]
    f = f.reshape(n, oh, bh, ow, bw, -1).mean(axis=(2, 4), dtype=np.float64)
    return f.reshape(n, oh * ow, -1)


def gaussian(feats: np.ndarray, eps: float = 0.01) -> Tuple[np.ndarray, np.ndarray]:
    """Per-position mean [P, D] and covariance + eps I [P, D, D] (float64)."""
    x = np.asarray(feats, np.float64)
    mu = x.mean(axis=0)
    xc = x - mu
    cov = np.einsum("npi,npj->pij", xc, xc) / max(x.shape[0] - 1, 1)
    cov += eps * np.eye(x.shape[2])
    return mu, cov


def sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Square root of symmetric PSD matrices [..., D, D] by eigendecomposition."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))[..., None, :]) @ np.swapaxes(v, -1, -2)


def wasserstein(mu1, cov1, mu2, cov2) -> np.ndarray:
    """Per-position 2-Wasserstein distance between Gaussians (Eq. 6)."""
    r2 = sqrtm_psd(cov2)
    cross = np.linalg.eigvalsh(r2 @ cov1 @ r2)
    w2 = (((mu1 - mu2) ** 2).sum(-1) + np.trace(cov1, axis1=-2, axis2=-1)
          + np.trace(cov2, axis1=-2, axis2=-1) - 2 * np.sqrt(np.clip(cross, 0, None)).sum(-1))
    return np.sqrt(np.clip(w2, 0, None))


def kl(mu1, cov1, mu2, cov2) -> np.ndarray:
    """Per-position KL(N1 || N2)."""
    d = mu1.shape[-1]
    inv2 = np.linalg.inv(cov2)
    dm = (mu2 - mu1)[..., None]
    tr = np.einsum("...ij,...ji->...", inv2, cov1)
    maha = (np.swapaxes(dm, -1, -2) @ inv2 @ dm)[..., 0, 0]
    ld = np.linalg.slogdet(cov2)[1] - np.linalg.slogdet(cov1)[1]
    return 0.5 * (tr + maha - d + ld)


def js(mu1, cov1, mu2, cov2) -> np.ndarray:
    """Jensen-Shannon estimate with the mixture replaced by its moment-matched Gaussian."""
    mu = 0.5 * (mu1 + mu2)
    dm = (mu1 - mu2)[..., :, None]
    cov = 0.5 * (cov1 + cov2) + 0.25 * dm @ np.swapaxes(dm, -1, -2)
    return 0.5 * (kl(mu1, cov1, mu, cov) + kl(mu2, cov2, mu, cov))


def foreground_weights(mu: np.ndarray) -> np.ndarray:
    """Eq. 7 weights: mean shift of each position from the image-wide mean feature."""
    shift = np.linalg.norm(mu - mu.mean(axis=0, keepdims=True), axis=-1)
    total = shift.sum()
    return shift / total if total > 0 else np.full(len(shift), 1.0 / len(shift))


def distance(orig: np.ndarray, aug: np.ndarray, method: str = "wasserstein",
             eps: float = 0.01) -> float:
    """Foreground-weighted distance between original and augmented support [N, P, D]."""
    if method not in METHODS:
        raise UserInputError(f"select: unknown method {method!r}; use one of {', '.join(METHODS)}")
    mu_o, cov_o = gaussian(orig, eps)
    mu_a, cov_a = gaussian(aug, eps)
    per_pos = {"wasserstein": wasserstein, "kl": kl, "js": js}[method](mu_a, cov_a, mu_o, cov_o) \
        if method != "wasserstein" else wasserstein(mu_o, cov_o, mu_a, cov_a)
    return float((foreground_weights(mu_o) * per_pos).sum())


def choose(distances: Dict[str, float]) -> List[str]:
    """Keep the groups at or below the mean distance (the paper's rule)."""
    if not distances:
        return []
    mean = float(np.mean(list(distances.values())))
    return [g for g, d in distances.items() if d <= mean]
