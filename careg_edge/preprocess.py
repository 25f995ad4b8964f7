"""Image (path or array) -> RGB uint8 at the encoder input size -> float32 NCHW.

Resizing: area interpolation when shrinking (no aliasing), bilinear when
enlarging; aspect ratio is not kept (the encoder input is fixed, and anomaly
maps are mapped back to each image's own size). Normalisation comes from the
encoder's own EncoderMeta: (rgb * scale - mean) / std.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from .errors import UserInputError
from .imageio import as_rgb8


def load(image, name: str = "image") -> np.ndarray:
    """Path or array -> RGB uint8 [H, W, 3] (see imageio for the conversions)."""
    return as_rgb8(image, name)


def describe(image, i: int) -> str:
    return str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") \
        else f"image #{i}"


def load_all(images: Sequence, what: str = "images") -> List[np.ndarray]:
    if isinstance(images, (str, bytes)) or hasattr(images, "__fspath__") \
            or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    images = list(images)
    if not images:
        raise UserInputError(f"{what}: empty list; give at least one image")
    return [load(im, describe(im, i)) for i, im in enumerate(images)]


def resize(rgb: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    shrink = rgb.shape[0] > h or rgb.shape[1] > w
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def encoder_input(rgbs: Sequence[np.ndarray], meta) -> np.ndarray:
    """RGB uint8 images of any size -> the encoder's float32 NCHW input."""
    return normalise([resize(rgb, tuple(meta.input_size)) for rgb in rgbs], meta)


def normalise(rgbs: Sequence[np.ndarray], meta) -> np.ndarray:
    """RGB uint8 images already at meta.input_size -> float32 [B, 3, H, W]."""
    x = np.stack(rgbs).astype(np.float32) * np.float32(meta.scale)
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
