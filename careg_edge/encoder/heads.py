"""Registration head and loss (paper Eq. 2-4; RegAD's SimSiam-style objective).

Per registered stage map (stages 2 and 3, as in RegAD) a 1x1-conv encoder
(conv-BN-ReLU, conv-BN-ReLU, conv) gives z and a predictor
(conv1x1-BN-ReLU-conv1x1) gives p. The support maps of the k shots are averaged
first (the accumulated support feature), then

    L = ½ D(p_q, sg(z_s)) + ½ D(p_s, sg(z_q)),   D = −cosine over channels,

averaged over spatial positions. The stop-gradient (sg) keeps the symmetric
objective from collapsing (SimSiam). The heads are used only in training; they
are not part of the exported encoder or its hash.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_STAGES = (1, 2)  # 0-based: stage-2 and stage-3 registered maps


def _cbr(cin, cout):
    return [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class StageHead(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        c, hidden = channels, max(channels // 4, 8)
        self.encoder = nn.Sequential(*_cbr(c, c), *_cbr(c, c), nn.Conv2d(c, c, 1))
        self.predictor = nn.Sequential(*_cbr(c, hidden), nn.Conv2d(hidden, c, 1))

    def forward(self, x):
        z = self.encoder(x)
        return z, self.predictor(z)


class RegistrationHead(nn.Module):
    """One StageHead per loss stage; `heads.<k>` names follow the stage index."""

    def __init__(self, channels, stages=LOSS_STAGES):
        super().__init__()
        self.stages = tuple(stages)
        self.heads = nn.ModuleDict({str(k): StageHead(channels[k]) for k in self.stages})

    def forward(self, query_feats, support_feats, masks=None):
        """query_feats[k]: [B,C,h,w]; support_feats[k]: [B,K,C,h,w]; masks[k]: optional
        [B,h,w] bool of the positions to compare -> scalar loss."""
        losses = []
        for k in self.stages:
            head = self.heads[str(k)]
            support = support_feats[k].mean(dim=1)  # accumulate the k shots (Eq. 3)
            z_q, p_q = head(query_feats[k])
            z_s, p_s = head(support)
            m = None if masks is None else masks[k]
            losses.append(0.5 * negative_cosine(p_q, z_s, m) + 0.5 * negative_cosine(p_s, z_q, m))
        return torch.stack(losses).mean()


def negative_cosine(p: torch.Tensor, z: torch.Tensor, mask=None) -> torch.Tensor:
    """−cos(p, sg(z)) over channels, per spatial position, averaged (over `mask`)."""
    cos = F.cosine_similarity(p, z.detach(), dim=1)
    if mask is None:
        return -cos.mean()
    m = mask.to(cos.dtype)
    return -(cos * m).sum() / m.sum().clamp(min=1.0)


def self_registration_loss(aug_feats, ref_feats, masks=None) -> torch.Tensor:
    """Equivariance term: mean over stages of −cos(reg(A·x), sg(reg(x))) per position.

    aug_feats[k] / ref_feats[k]: [B,C,h,w] registered maps (the encoder's own
    outputs, no head) of the augmented and the unaugmented query; masks[k]: [B,h,w]
    positions that see the image in both. Both branches show the same image, so no
    head can explain a difference away: only an STN that undoes A lowers it."""
    losses = [negative_cosine(a, r, None if masks is None else masks[k])
              for k, (a, r) in enumerate(zip(aug_feats, ref_feats))]
    return torch.stack(losses).mean()


def inside_image(theta: torch.Tensor, shapes) -> list:
    """Per stage, [B,h,w] bool: does the registered position sample inside the image?
    theta: cumulative [B,3,2,3]. Positions that read the clamped border carry no
    information; comparing them would reward pushing the map off the image."""
    from .stn import base_grid
    out = []
    for k, (h, w) in enumerate(shapes):
        g = base_grid(h, w).to(theta) @ theta[:, k].transpose(1, 2)  # [B, h*w, 2]
        out.append((g.abs() <= 1.0).all(dim=-1).reshape(-1, h, w))
    return out
