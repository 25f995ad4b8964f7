"""What an encoder is, as profiles, checkpoints, ONNX files and engines record it.
Below both runtime/ (which loads encoders) and encoder/ (which builds them), so
neither imports the other for it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Tuple


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
