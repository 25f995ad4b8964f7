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

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Tuple

import numpy as np

OUTPUT_NAMES = ("feat1", "feat2", "feat3", "theta", "theta_inv")


@dataclass(frozen=True)
class EncoderMeta:
    """What a profile or engine must agree with; carried by checkpoints and ONNX files."""

    encoder_hash: str                 # sha256 hex of the encoder tensors (see encoder.careg)
    backbone: str                     # e.g. "resnet50v2"
    input_size: Tuple[int, int]       # (H, W) the encoder expects
    mean: Tuple[float, float, float]  # RGB, applied to pixels scaled by `scale`
    std: Tuple[float, float, float]
    scale: float = 1.0 / 255.0
    stn_mode: str = "rotation_scale"
    channels: Tuple[int, int, int] = (0, 0, 0)
    trained: bool = False             # False = ImageNet backbone + identity STNs
    extra: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"], d["channels"] = list(self.mean), list(self.std), list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderMeta":
        d = dict(d)
        for k in ("input_size", "mean", "std", "channels"):
            if k in d:
                d[k] = tuple(d[k])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class Runtime:
    """Base class: `load` in the constructor, `infer` per batch, `info` for humans."""

    name = "base"
    meta: EncoderMeta

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
