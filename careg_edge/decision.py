"""Score vs the profile's threshold -> Result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import numpy as np


@dataclass
class Result:
    score: float               # raw distance (PatchCore: re-weighted); never min-max normalised
    anomaly_map: np.ndarray    # H x W float32 at the input image's resolution
    mask: np.ndarray           # H x W bool: anomaly_map > threshold
    is_defect: bool            # score > threshold
    threshold: float
    timings: Dict[str, float] = field(default_factory=dict)   # ms per stage

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        return {"score": self.score, "is_defect": self.is_defect, "threshold": self.threshold,
                "defect_pixels": int(self.mask.sum()), "timings_ms": dict(self.timings)}


def decide(score: float, amap: np.ndarray, threshold: float, timings) -> Result:
    return Result(float(score), amap, amap > threshold, bool(score > threshold),
                  float(threshold), dict(timings))
