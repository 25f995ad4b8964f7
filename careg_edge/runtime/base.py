"""One interface over every encoder runtime (torch, ONNX Runtime, TensorRT).

Every backend returns the same five arrays per batch (names are also the ONNX
output names):

    feat1 [B, C1, H/4,  W/4 ]   registered feature maps after each stage's STN
    feat2 [B, C2, H/8,  W/8 ]
    feat3 [B, C3, H/16, W/16]
    theta     [B, 3, 2, 3]      cumulative transform of stage k: registered frame
                                -> image frame, PyTorch affine_grid convention,
                                normalised coords, align_corners=False
    theta_inv [B, 3, 2, 3]      its closed-form inverse (image -> registered)
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..encoder_meta import EncoderMeta

OUTPUT_NAMES = ("feat1", "feat2", "feat3", "theta", "theta_inv")


class Runtime:
    """Base class: `load` in the constructor, `infer` per batch, `info` for humans."""

    name = "base"
    meta: EncoderMeta
    device = "cpu"   # where infer computes: GPU runtimes set "cuda:N" (gpu/device.py reads it)

    def infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """batch: float32 [B, 3, H, W], already normalised. Returns OUTPUT_NAMES arrays."""
        raise NotImplementedError

    def info(self) -> Dict[str, str]:
        return {"backend": self.name, "backbone": self.meta.backbone,
                "encoder_hash": self.meta.encoder_hash[:16]}

    def warmup(self, batch_sizes: List[int] = (1,)) -> None:
        h, w = self.meta.input_size
        for b in batch_sizes:
            self.infer(np.zeros((b, 3, h, w), np.float32))
