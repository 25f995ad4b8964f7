"""The verdict of one image: score vs the profile's threshold -> Result.

The compiled road decides (careg::verdict, shared with the C API): defect when the
score is above the threshold or is not finite (NaN/inf cannot be trusted, so it is
never a pass), with a one-line `reason` either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict

import numpy as np


@dataclass
class Result:
    score: float               # raw distance (PatchCore max: re-weighted); never min-max normalised
    anomaly_map: np.ndarray    # H x W float32 at the input image's resolution
    mask: np.ndarray           # H x W bool: anomaly_map > threshold
    is_defect: bool            # score > threshold, or score not finite
    threshold: float
    timings: Dict[str, float] = field(default_factory=dict)   # ms per stage
    reason: str = ""           # why is_defect is what it is, one line

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        return {"score": self.score, "is_defect": self.is_defect, "threshold": self.threshold,
                "defect_pixels": int(self.mask.sum()), "timings_ms": dict(self.timings),
                "reason": self.reason}


def is_defect(score: float, threshold: float) -> bool:
    """The road's rule in Python, for code that judges stored scores."""
    return not math.isfinite(score) or not math.isfinite(threshold) or score > threshold


def decide(score: float, amap: np.ndarray, threshold: float, timings, defect=None,
           reason: str = "") -> Result:
    """`defect`/`reason`: the road's verdict; recomputed by the same rule when absent."""
    d = is_defect(float(score), float(threshold)) if defect is None else bool(defect)
    if not reason:
        reason = (f"image score is {score}: not finite, treated as a defect"
                  if not math.isfinite(score) else
                  f"score {score:.6g} {'>' if d else '<='} threshold {threshold:.6g}")
    return Result(float(score), amap, amap > threshold, d, float(threshold), dict(timings), reason)
