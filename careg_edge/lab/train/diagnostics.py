"""Held-out diagnostics of registration: val_cosine, val_slope, val_corr.

* val_cosine: per-position cosine between the registered stage-3 maps of a moved
  held-out image and another held-out image of its category (higher = closer;
  a collapsing trunk also raises it, so read it beside the untrained reference);
* val_slope / val_corr: the rotation of the stage-3 cumulative θ regressed on a
  known applied rotation, per held-out image. −1 = the STN undoes each image's
  own rotation; 0 = one common transform for every image.
The untrained reference is the same evaluation of the freshly built model
(ImageNet trunk, identity STNs): the loop logs it as step 0.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch

from .data import augment, random_affine

DIAG_SEED, DIAG_DRAWS = 54321, 2  # rotation diagnostic: fixed angles, 2 per held image


@torch.no_grad()
def registration_cosine(enc, query: torch.Tensor, support: torch.Tensor, stage: int = 2) -> float:
    """Mean per-position cosine between registered maps of normalised query/support
    batches (what the estimators compare); higher = better registered."""
    was = enc.training
    enc.eval()
    fq, fs = enc(query)[stage], enc(support)[stage]
    enc.train(was)
    return float(torch.nn.functional.cosine_similarity(fq, fs, dim=1).mean())


def heldout_cosine(enc, held: Dict[str, torch.Tensor], norm, cfg) -> float:
    """Registration cosine on held-out normal images: each held image, moved by a
    fixed random affine, against the next held image of its category."""
    gen = torch.Generator().manual_seed(12345)
    vals = []
    for name in sorted(held):
        imgs = held[name]
        if len(imgs) < 2:
            continue
        q = augment(norm(imgs), random_affine(len(imgs), cfg, gen))
        s = norm(torch.roll(imgs, 1, dims=0))
        vals.append(registration_cosine(enc, q, s))
    return float(np.mean(vals)) if vals else float("nan")


def rotation_theta(angles: torch.Tensor) -> torch.Tensor:
    """[n] radians -> [n,2,3] pure rotations about the image centre (augment's θ)."""
    c, s, z = torch.cos(angles), torch.sin(angles), torch.zeros_like(angles)
    return torch.stack([torch.stack([c, -s, z], 1), torch.stack([s, c, z], 1)], 1)


def theta_angle(theta: torch.Tensor) -> torch.Tensor:
    """Rotation angle (radians) of [...,2,3] affines: atan2(θ[1,0], θ[0,0])."""
    return torch.atan2(theta[..., 1, 0], theta[..., 0, 0])


@torch.no_grad()
def heldout_rotation(enc, held: Dict[str, torch.Tensor], norm, cfg):
    """Per-image registration check -> (slope, corr) of predicted vs applied angle.

    Each held-out image is rotated by DIAG_DRAWS known angles in ±max_rotation
    (fixed generator: the same angles at every evaluation); the prediction is the
    rotation of the stage-3 cumulative θ. augment samples the image at A·p, so the
    registered map, which samples at A·θ·p, is the original when θ = A⁻¹: an STN
    that undoes each rotation gives slope −1 (corr −1). One common rotation for
    every image gives slope ≈ 0 whatever its size (pooled over categories)."""
    gen = torch.Generator().manual_seed(DIAG_SEED)
    was = enc.training
    enc.eval()
    applied, predicted = [], []
    for name in sorted(held):
        imgs = held[name].repeat(DIAG_DRAWS, 1, 1, 1)
        ang = (torch.rand(len(imgs), generator=gen) * 2 - 1) * math.radians(cfg.max_rotation)
        theta = enc(augment(norm(imgs), rotation_theta(ang)))[3][:, 2]
        applied.append(ang)
        predicted.append(theta_angle(theta).cpu().double())
    enc.train(was)
    return angle_fit(torch.cat(applied).double().numpy(), torch.cat(predicted).numpy())


def angle_fit(applied: np.ndarray, predicted: np.ndarray):
    """Least-squares slope and Pearson correlation of predicted vs applied angle.
    Predictions are unwrapped around their circular mean first, so a common
    rotation near ±180° does not split the cloud. NaN when undefined (no spread)."""
    centre = math.atan2(np.sin(predicted).mean(), np.cos(predicted).mean())
    pred = centre + np.angle(np.exp(1j * (predicted - centre)))
    da, dp = applied - applied.mean(), pred - pred.mean()
    var_a, var_p = (da ** 2).sum(), (dp ** 2).sum()
    if var_a <= 1e-12:
        return float("nan"), float("nan")
    slope = float((da * dp).sum() / var_a)
    corr = float((da * dp).sum() / math.sqrt(var_a * var_p)) if var_p > 1e-12 else float("nan")
    return slope, corr


def evaluate(enc, held: Dict[str, torch.Tensor], norm, cfg) -> dict:
    """{val_cosine, val_slope, val_corr} on the held-out images."""
    slope, corr = heldout_rotation(enc, held, norm, cfg)
    return {"val_cosine": heldout_cosine(enc, held, norm, cfg), "val_slope": slope, "val_corr": corr}
