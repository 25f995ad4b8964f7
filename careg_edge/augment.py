"""Support-set augmentation (paper V-B). Only the support set is ever augmented.

Images are RGB uint8 already resized to the encoder input. Geometric warps use
reflected borders: black corners would become "normal" patterns in the support
statistics and hide real dark defects at the edge.

Two vocabularies:
  REGAD_SET   the fixed set of the RegAD code (identity excluded: originals are
              always kept), used with augment="regad".
  CANDIDATES  the paper's ten candidate groups; augment="auto" scores every group
              with selection.py and keeps those at or below the mean distance.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import cv2
import numpy as np

from .errors import UserInputError

PI = np.pi


def rotate(img: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about the centre by `angle` radians (counter-clockwise)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(np.degrees(angle)), 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def translate(img: np.ndarray, tx: float, ty: float) -> np.ndarray:
    """Shift by a fraction of the width/height."""
    h, w = img.shape[:2]
    m = np.float32([[1, 0, tx * w], [0, 1, ty * h]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def grey(img):
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.repeat(g[..., None], 3, axis=2)


def brightness(img, factor):
    return np.clip(img.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)


def blur(img, sigma):
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)


def centre_crop(img, frac):
    h, w = img.shape[:2]
    ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
    y, x = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(img[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _rot90(k):
    return lambda img, others: np.ascontiguousarray(np.rot90(img, k))


def _mixup(img, others):
    # Blend with the next support image; with K=1 with its own mirror image.
    other = others[0] if others else img[:, ::-1]
    return ((img.astype(np.uint16) + other.astype(np.uint16) + 1) // 2).astype(np.uint8)


# name -> f(img, other_support_images) -> img
OPS: Dict[str, Callable] = {
    "hflip": lambda img, o: np.ascontiguousarray(img[:, ::-1]),
    "vflip": lambda img, o: np.ascontiguousarray(img[::-1]),
    "grey": lambda img, o: grey(img),
    "rot90": _rot90(1), "rot180": _rot90(2), "rot270": _rot90(3),
    "brightness0.8": lambda img, o: brightness(img, 0.8),
    "brightness1.2": lambda img, o: brightness(img, 1.2),
    "blur1": lambda img, o: blur(img, 1.0),
    "crop0.875": lambda img, o: centre_crop(img, 0.875),
    "mixup": _mixup,
}
for _k in (1, 2, 3, 4):
    for _s, _n in ((1, "+"), (-1, "-")):
        OPS[f"rot{_n}{_k}pi/16"] = (lambda a: lambda img, o: rotate(img, a))(_s * _k * PI / 16)
for _t in (0.1, 0.2):
    for _s, _n in ((1, "+"), (-1, "-")):
        OPS[f"shift{_n}{_t}"] = (lambda d: lambda img, o: translate(img, d, d))(_s * _t)

REGAD_SET = ["rot+1pi/16", "rot-1pi/16", "rot+2pi/16", "rot-2pi/16", "rot+3pi/16",
             "rot-3pi/16", "rot+4pi/16", "rot-4pi/16", "shift+0.1", "shift-0.1", "shift+0.2",
             "shift-0.2", "hflip", "grey", "rot90", "rot180", "rot270"]

CANDIDATES: Dict[str, List[str]] = {
    "greying": ["grey"],
    "flipping": ["hflip", "vflip"],
    "large_rotation": ["rot90", "rot180", "rot270"],
    "small_rotation": ["rot+1pi/16", "rot-1pi/16", "rot+2pi/16", "rot-2pi/16"],
    "large_translation": ["shift+0.2", "shift-0.2"],
    "small_translation": ["shift+0.1", "shift-0.1"],
    "brightness": ["brightness0.8", "brightness1.2"],
    "gaussian_blur": ["blur1"],
    "centre_crop": ["crop0.875"],
    "mixup": ["mixup"],
}


def expand(augment) -> List[str]:
    """Operation names for augment = "none" | "regad" | group/op names (list or comma string)."""
    if augment in (None, "none", False):
        return []
    if augment == "regad":
        return list(REGAD_SET)
    names = augment.split(",") if isinstance(augment, str) else list(augment)
    ops: List[str] = []
    for n in (x.strip() for x in names):
        if n in CANDIDATES:
            ops += CANDIDATES[n]
        elif n in OPS:
            ops.append(n)
        else:
            raise UserInputError(f"augment: unknown augmentation {n!r}; use 'auto', 'regad', "
                                 f"'none' or names from {', '.join(CANDIDATES)}")
    return list(dict.fromkeys(ops))


def partner(op: str, i: int, k: int) -> int:
    """The other support image the view of image i under `op` is made from (i itself
    for single-image ops). Leave-one-out must drop these views too: a mixup view of
    image i-1 is half image i, and leaving it in the fit makes i look familiar."""
    return (i + 1) % k if (op == "mixup" and k > 1) else i


def apply(ops: Sequence[str], images: Sequence[np.ndarray]) -> List[np.ndarray]:
    """All views: for each op (outer) and each support image (inner)."""
    out = []
    for op in ops:
        f = OPS[op]
        for i, img in enumerate(images):
            others = [images[(i + 1) % len(images)]] if len(images) > 1 else []
            out.append(f(img, others))
    return out
