"""One request item, checked: product name and image bytes -> RGB; results -> outputs.

Shared by the PyTriton server, the Python-backend models of the exported repository
and the client, so every entry point refuses the same things with the same words.
"""
from __future__ import annotations

import io
import math
import re
from typing import Optional

import numpy as np

from ..errors import UserInputError
from . import HEATMAP, MAX_IMAGE_BYTES, MAX_PIXELS

PRODUCT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RequestError(UserInputError):
    """One request item is unusable; the others of its batch are still answered."""


def as_bytes(value) -> bytes:
    """An element of a BYTES tensor (bytes, np.bytes_, or str) -> bytes."""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise RequestError(f"expected bytes, got {type(value).__name__}")


def product_name(value) -> str:
    raw = as_bytes(value)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = ""
    if not PRODUCT.match(name):
        shown = raw[:40].decode("utf-8", "replace")
        raise RequestError(f"product {shown!r}: not a plain name (1-64 of A-Z a-z 0-9 _ . -)")
    return name


def decode_image(value, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 [H, W, 3], with the size limits checked before decoding."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from ..imageio import to_rgb8
    raw = as_bytes(value)
    if not raw:
        raise RequestError("image: empty bytes")
    if len(raw) > max_bytes:
        raise RequestError(f"image: {len(raw)} bytes, more than the limit of {max_bytes}")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise RequestError(f"image: {w}x{h} pixels, more than the limit of {max_pixels}")
            im.load()
            return to_rgb8(ImageOps.exif_transpose(im), "image")
    except RequestError:
        raise
    except UserInputError as e:
        raise RequestError(str(e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise RequestError(f"image: not a readable image ({type(e).__name__})") from None


def small_heatmap(amap: Optional[np.ndarray], size: int = HEATMAP) -> np.ndarray:
    """The anomaly map (score units) area-averaged to size x size; zeros when absent."""
    if amap is None:
        return np.zeros((size, size), np.float32)
    import cv2
    a = np.nan_to_num(np.asarray(amap, np.float32), nan=0.0, posinf=3.4e38, neginf=0.0)
    return cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def outputs_of(result=None, error: str = "", size: int = HEATMAP) -> dict:
    """One item's outputs as 1-element arrays (the heatmap [size, size]).
    result: a careg_edge Result, or None with `error` set."""
    if result is None:
        return {"verdict": b"error", "score": math.nan, "threshold": math.nan, "reason": b"",
                "error": error.encode("utf-8"), "heatmap": small_heatmap(None, size)}
    return {"verdict": b"defect" if result.is_defect else b"ok", "score": float(result.score),
            "threshold": float(result.threshold), "reason": result.reason.encode("utf-8"),
            "error": b"", "heatmap": small_heatmap(result.anomaly_map, size)}


def stack(items) -> dict:
    """A list of outputs_of() dicts -> arrays with a leading batch axis, as Triton wants them."""
    out = {}
    for k in ("verdict", "reason", "error"):
        out[k] = np.array([[it[k]] for it in items], dtype=object)
    for k in ("score", "threshold"):
        out[k] = np.array([[it[k]] for it in items], dtype=np.float32)
    out["heatmap"] = np.stack([it["heatmap"] for it in items]).astype(np.float32)
    return out
