"""Does a profile fit the precision of the encoder that will score with it?

A profile stores the EncoderMeta it was enrolled with (info["encoder"]); its
extra "precision" says what the encoder computed in: absent = fp32, "fp16",
"int8" (TensorRT engine) or "int8-qdq" (INT8 ONNX). The encoder hash is the same
for every precision of one encoder, so the hash check alone lets a profile made
on FP32 features score INT8 ones.

  INT8 on one side only  -> refused. INT8 moves features by a few per cent
                            (feature cosine 0.84-0.99 per stage, calibration/int8.py),
                            the size of the gap between good and defective images, so
                            the FP32 threshold no longer means what it said.
  FP16 vs FP32           -> a warning. FP16 moves features by ~1e-3 relative, far
                            below the spread of good scores; the threshold holds.
"""
from __future__ import annotations

import warnings
from typing import Optional

from ..errors import EncoderMismatch


def precision_of(extra: Optional[dict]) -> str:
    """fp32 | fp16 | int8 | int8-qdq (fp32 when not recorded)."""
    return str((extra or {}).get("precision") or "fp32")


def check_precision(profile_info: dict, encoder_extra: Optional[dict], where: str) -> None:
    """Raise EncoderMismatch for an INT8/non-INT8 mix; warn for FP16/FP32."""
    enrolled = precision_of((profile_info.get("encoder") or {}).get("extra"))
    running = precision_of(encoder_extra)
    if enrolled == running:
        return
    if enrolled.startswith("int8") or running.startswith("int8"):
        raise EncoderMismatch(
            f"{where}: enrolled on a {enrolled} encoder, the loaded encoder runs {running}; "
            f"INT8 features differ too much for the threshold to hold: re-enroll with this "
            f"encoder (careg-edge enroll --model <it>), or load the {enrolled} encoder")
    warnings.warn(f"{where}: enrolled on a {enrolled} encoder, scoring with {running}; scores "
                  f"move by ~1e-3 relative (re-enroll with this encoder to remove the doubt)",
                  stacklevel=3)
