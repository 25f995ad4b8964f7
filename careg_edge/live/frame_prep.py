"""What a frame goes through before the inspector: --roi crop, then --resize by policy."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..errors import UserInputError
from ..sources import _cv2


def parse_roi(text: Optional[str]) -> Optional[Tuple[int, int, int, int]]:
    """'x,y,w,h' in pixels of the source frame."""
    if not text:
        return None
    try:
        x, y, w, h = (int(v) for v in str(text).split(","))
    except ValueError:
        raise UserInputError(f"--roi {text}: expected x,y,w,h in pixels, e.g. --roi 100,50,640,480") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise UserInputError(f"--roi {text}: x,y must be >= 0 and w,h > 0")
    return x, y, w, h


def parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'WxH' -> (W, H)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    raise UserInputError(f"--resize {text}: expected WxH in pixels, e.g. --resize 640x480")


def prepare(img: np.ndarray, roi=None, size=None, mode: str = "stretch") -> np.ndarray:
    """Crop the region of interest, then resize by policy (stretch | letterbox | crop)."""
    if roi is not None:
        x, y, w, h = roi
        H, W = img.shape[:2]
        if x + w > W or y + h > H:
            raise UserInputError(f"--roi {x},{y},{w},{h}: outside the {W}x{H} frame")
        img = img[y:y + h, x:x + w]
    if size is None:
        return np.ascontiguousarray(img)
    cv2 = _cv2()
    tw, th = size
    H, W = img.shape[:2]
    if mode == "stretch":
        return cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
    s = min(tw / W, th / H) if mode == "letterbox" else max(tw / W, th / H)
    nw, nh = max(1, round(W * s)), max(1, round(H * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    if mode == "crop":
        x0, y0 = (nw - tw) // 2, (nh - th) // 2
        return np.ascontiguousarray(r[y0:y0 + th, x0:x0 + tw])
    out = np.zeros((th, tw, 3), np.uint8)  # letterbox: black bars, image centred
    x0, y0 = (tw - nw) // 2, (th - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = r
    return out
