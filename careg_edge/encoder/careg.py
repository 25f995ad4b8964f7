"""The CAReg encoder: backbone trunk with a spatial transformer after each stage.

Stage k's map is warped by its STN before stage k+1 sees it (as in RegAD), so
stage k's own θk lives in the registered frame of stage k-1 and the cumulative
transform registered-frame-k -> image frame is A1 = θ1, A2 = θ1∘θ2,
A3 = θ1∘θ2∘θ3. forward returns exactly runtime/base.py's five outputs; the
inverses are computed in-graph in closed form (no numpy, no device moves), so
the same graph exports to ONNX.
"""
from __future__ import annotations

import hashlib
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..errors import UserInputError
from ..encoder_meta import EncoderMeta
from .backbones import create_backbone
from .stn import STN, STN_MODES, compose, invert


class CARegEncoder(nn.Module):
    """`trunk` (the backbone) + `stn` (three STNs). `weights` goes to create_backbone
    when `backbone` is a name. stn_mode="identity" gives the ImageNet baseline
    (exact identity, trained=False)."""

    def __init__(self, backbone: Union[str, nn.Module] = "resnet50v2",
                 stn_mode: str = "rotation_scale", weights="default",
                 input_size: Tuple[int, int] = (224, 224), trained: bool = False):
        super().__init__()
        if stn_mode not in STN_MODES:
            raise UserInputError(f"stn_mode {stn_mode!r} is unknown; choose one of "
                                 f"{', '.join(STN_MODES)}")
        h, w = (int(input_size), int(input_size)) if np.isscalar(input_size) else map(int, input_size)
        if h % 16 or w % 16 or h < 64 or w < 64:
            raise UserInputError(f"input size {h}x{w}: height and width must be multiples of 16, "
                                 "at least 64")
        self.trunk = create_backbone(backbone, weights) if isinstance(backbone, str) else backbone
        self.stn_mode, self.input_size = stn_mode, (h, w)
        self.trained = bool(trained) and stn_mode != "identity"
        self.stn = nn.ModuleList(
            STN(c, (h // s, w // s), stn_mode) for c, s in zip(self.trunk.channels, (4, 8, 16)))

    @property
    def backbone_name(self) -> str:
        return self.trunk.name

    def forward(self, x: torch.Tensor):
        """x: normalised [B,3,H,W] -> (feat1, feat2, feat3, theta[B,3,2,3], theta_inv[B,3,2,3])."""
        feats, cumulative = [], []
        for k in range(3):
            x = self.trunk.stage(k, x)
            x, theta_k = self.stn[k](x)
            feats.append(x)
            cumulative.append(theta_k if k == 0 else compose(cumulative[-1], theta_k))
        theta = torch.stack(cumulative, dim=1)
        return feats[0], feats[1], feats[2], theta, invert(theta)

    def encoder_hash(self) -> str:
        """sha256 over the encoder tensors (trunk + STNs): names sorted, each name's
        UTF-8 bytes then its data as float32 little-endian. BN batch counters are
        left out: they never change the output."""
        h = hashlib.sha256()
        sd = self.state_dict()
        for name in sorted(sd):
            if name.endswith("num_batches_tracked"):
                continue
            h.update(name.encode("utf-8"))
            h.update(sd[name].detach().cpu().to(torch.float32).contiguous().numpy()
                     .astype("<f4", copy=False).tobytes())
        return h.hexdigest()

    def meta(self, extra=None) -> EncoderMeta:
        t = self.trunk
        return EncoderMeta(
            encoder_hash=self.encoder_hash(), backbone=t.name, input_size=self.input_size,
            mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std),
            scale=float(t.scale), stn_mode=self.stn_mode,
            channels=tuple(int(c) for c in t.channels), trained=self.trained,
            extra=dict(extra or {}))


def imagenet_encoder(backbone: str, input_size=(224, 224), weights="default") -> CARegEncoder:
    """The paper's "without CAReg" baseline: ImageNet trunk, identity transforms."""
    return CARegEncoder(backbone, stn_mode="identity", weights=weights,
                        input_size=input_size, trained=False).eval()
