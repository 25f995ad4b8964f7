"""The image-score rules and the display resize; the map itself (unwarp, blur, image
score) is built by the compiled road (careg_edge.scoring, cpp/src/road_score.cpp).

The map lives in the encoder's input frame (image_h x image_w of the profile):
bilinear upsampling (through theta_inv of stage 3 in registered-frame mode, the
"inverse-affine heatmap unwarp"), Gaussian blur sigma (4 px). It is then resized
bilinearly to each image's own size for display and masks; that resize does not
change the score.
"""
from __future__ import annotations

import re
from typing import Tuple

import numpy as np

from . import _core
from .errors import UserInputError

# Default image score, chosen by measurement (docs/archive/results-superseded.md,
# "Image score"): the mean of the hottest 20 % of the map. Picked on magnetic tile (exploratory ablation, +9 to +17
# points image AUROC over the max), confirmed on metal_plate through `careg-edge eval`
# (EfficientNet-Lite0 PatchCore K=2 95.8 -> 98.8, K=8 99.8 -> 99.9).
DEFAULT_IMAGE_SCORE = "top20%"
# digits with an optional fraction only: exactly what the C++ reader accepts
_TOP = re.compile(r"top(\d+(?:\.\d+)?)%")


def check_image_score(rule: str) -> str:
    """'max' | 'mean' | 'top<P>%' (0 < P <= 100); one clear error otherwise.

    max: the map maximum (PatchCore: its Eq. 7 re-weighted maximum) -- right for small
    defects. mean / top<P>%: mean of the whole map or of its highest P % -- for
    defects spread over a surface (textures), where one hot spot is weak evidence."""
    if rule in ("max", "mean"):
        return rule
    m = _TOP.fullmatch(rule) if isinstance(rule, str) else None
    if not (m and 0 < float(m.group(1)) <= 100):
        raise UserInputError(f"image score {rule!r}: use max, mean or top<P>% with 0 < P <= 100 "
                             "(e.g. top20%)")
    return rule


IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


def to_size(amap: np.ndarray, size: Tuple[int, int], threads: int = 0) -> np.ndarray:
    """Bilinear resize of one map [H, W] to `size` (align_corners=False, border)."""
    if amap.shape == tuple(size):
        return amap
    out = _core.affine_sample(np.ascontiguousarray(amap[None, None], np.float32), IDENTITY[None],
                              int(size[0]), int(size[1]), threads)
    return out[0, 0]
