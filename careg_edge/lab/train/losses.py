"""One training step's loss terms, the masks they compare over, and the check
that a step has anything to learn from.

* registration (`loss_reg`, paper Eq. 2-4): the augmented query against its
  k-shot support through the SimSiam heads (encoder/heads.py);
* self-registration (`loss_self`): the registered maps of the augmented query
  against those of the same query unaugmented (no heads in the path);
* θ supervision (`loss_theta`): the query's applied transform A is known, so
  each stage's cumulative θ on A·x is pulled towards A⁻¹.

Why the θ term: both feature-space terms are flat in the direction that matters.
A common transform, plus heads or trunk maps that tolerate misalignment, scores
about as well as undoing each image's own A, so training drifted or collapsed
instead of registering (val_corr between -0.25 and +0.21 over thousands of GPU
steps). The θ loss has its minimum at per-image registration, a gradient that
does not vanish when the maps are smooth, and no constant θ meets it for every A.
The label is A⁻¹ itself, i.e. "back to the pose the category has in the data".
A relative label, A⁻¹ composed with the STN's own θ on the unaugmented query,
would leave a category's natural pose free, but it chases itself: in trials its
value rose from 0.15 to over 3 within 300 steps, with or without gradient
clipping, while the fixed label fell steadily. Where a category's natural pose
varies widely (the synthetic gear and washer, ±180°) the label is partly
unknowable from the image and the term pulls towards the average there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from ...encoder.heads import inside_image, self_registration_loss
from ...encoder.stn import compose, invert
from .data import augment, random_affine


@dataclass
class StepTerms:
    reg: torch.Tensor
    self_term: Optional[torch.Tensor]      # None when self_weight == 0
    theta_term: Optional[torch.Tensor]     # None when theta_weight == 0
    positions: List[int]                   # valid positions per loss stage (reg and self masks)
    theta_finite: bool

    def total(self, self_weight: float, theta_weight: float) -> torch.Tensor:
        loss = self.reg
        if self.self_term is not None:
            loss = loss + self_weight * self.self_term
        if self.theta_term is not None:
            loss = loss + theta_weight * self.theta_term
        return loss


def step_terms(enc, head, norm, query, support, cfg, gen) -> StepTerms:
    """One step's loss terms.

    The unaugmented queries ride in the same batch (after the supports) when the
    self term needs them; with self and θ weights 0 the step is exactly the
    registration-only step."""
    b, k = support.shape[:2]
    aug = random_affine(b, cfg, gen)
    plain = norm(query)
    q = augment(plain, aug)
    with_self = cfg.self_weight > 0
    n = b * (1 + k)  # queries + supports; the plain queries (if any) follow
    batch = [q, norm(support.flatten(0, 1))] + ([plain] if with_self else [])
    *feats, theta, _ = enc(torch.cat(batch))
    qf = [f[:b] for f in feats]
    sf = [f[b:n].reshape(b, k, *f.shape[1:]) for f in feats]
    theta_term = theta_loss(theta[:b], aug.to(theta)) if cfg.theta_weight > 0 else None
    # compare only positions that see the image in the query and in every support
    # (the query's own augmentation also moved pixels in from the border)
    th = theta.detach()
    th = torch.cat([compose(aug.to(th).unsqueeze(1), th[:b]), th[b:]])
    valid = inside_image(th, [f.shape[-2:] for f in feats])
    masks = [v[:b] & v[b:n].reshape(b, k, *v.shape[1:]).all(dim=1) for v in valid]
    positions = [int(masks[s].sum()) for s in head.stages]
    reg = head(qf, sf, masks)
    self_term = None
    if with_self:
        # same rule for the self term: positions inside the image in both copies
        self_masks = [v[:b] & v[n:] for v in valid]
        positions += [int(m.sum()) for m in self_masks]
        self_term = self_registration_loss(qf, [f[n:] for f in feats], self_masks)
    return StepTerms(reg, self_term, theta_term, positions, bool(torch.isfinite(th).all()))


def theta_loss(theta_aug: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
    """Squared error between each stage's cumulative θ on the augmented queries
    [B,3,2,3] and A⁻¹ [B,2,3]: augment samples x at A·p and the STN then samples
    at θ·p, so the registered query reads x at A·θ·p, which is x itself when
    θ = A⁻¹. Summed over the six entries, averaged over images and stages (a
    rotation error δ costs 4(1 − cos δ) ≈ 2δ²). Modes that cannot express part
    of A (no translation in rotation_scale) leave a constant in the value and
    no gradient from it."""
    return ((theta_aug - invert(aug).unsqueeze(1)) ** 2).sum(dim=(-2, -1)).mean()


def step_loss(enc, head, norm, query, support, cfg, gen):
    """One training step's total loss: registration + self + θ terms, each weighted."""
    t = step_terms(enc, head, norm, query, support, cfg, gen)
    return t.total(cfg.self_weight, cfg.theta_weight)


def dead_reason(terms: StepTerms, loss: torch.Tensor) -> Optional[str]:
    """Why a step has nothing valid to learn from, or None.

    A transform that sends a whole stage map outside the image leaves no
    position to compare: the feature terms are 0 with no gradient, and SGD
    cannot find its way back (seen as a loss of exactly 0.0 for thousands of
    steps). A non-finite θ or loss would poison every weight on the update."""
    if not terms.theta_finite:
        return "nonfinite-theta"
    if min(terms.positions) == 0:
        return "empty-mask"
    if not torch.isfinite(loss):
        return "nonfinite-loss"
    return None
