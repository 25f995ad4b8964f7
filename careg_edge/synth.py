"""Synthetic defects pasted on good images, for threshold calibration without defects.

Following "Few-Shot Fast-Adaptive Anomaly Detection" (appendix A.4): 1-3 rectangles
per image, area a fraction U(0.0025, 0.025) of the image, aspect ratio in
[0.01, 100], filled with one of: random uniform noise, a constant colour, a copy of
another part of the same image, or a blurred copy of what was there.
The aspect ratio is drawn log-uniformly (so tall and wide are equally likely; a
plain U(0.01, 100) would make 99 % of them wide) and the rectangle is clipped to
the image.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

KINDS = ("uniform", "constant", "copy", "blur")


def _rect(rng, h, w) -> Tuple[int, int, int, int]:
    area = rng.uniform(0.0025, 0.025) * h * w
    aspect = float(np.exp(rng.uniform(np.log(0.01), np.log(100.0))))
    rh = int(np.clip(round(np.sqrt(area / aspect)), 1, h))
    rw = int(np.clip(round(np.sqrt(area * aspect)), 1, w))
    y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
    return y, x, rh, rw


def _fill(img, rng, kind, y, x, rh, rw):
    h, w = img.shape[:2]
    if kind == "uniform":
        return rng.integers(0, 256, size=(rh, rw, 3), dtype=np.uint8)
    if kind == "constant":
        return np.broadcast_to(rng.integers(0, 256, size=3, dtype=np.uint8), (rh, rw, 3))
    if kind == "copy":
        sy, sx = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        return img[sy:sy + rh, sx:sx + rw]
    blurred = cv2.GaussianBlur(img, (0, 0), 3.0 + 0.02 * max(h, w))
    return blurred[y:y + rh, x:x + rw]


def paste_defects(img: np.ndarray, rng: np.random.Generator, max_defects: int = 3,
                  kind: str = None) -> Tuple[np.ndarray, np.ndarray]:
    """Return (defective RGB uint8 copy, bool mask of the pasted pixels)."""
    out = img.copy()
    mask = np.zeros(img.shape[:2], bool)
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, max_defects + 1))):
        k = kind or KINDS[int(rng.integers(len(KINDS)))]
        y, x, rh, rw = _rect(rng, h, w)
        out[y:y + rh, x:x + rw] = _fill(img, rng, k, y, x, rh, rw)
        mask[y:y + rh, x:x + rw] = True
    return out, mask
