"""Reading images the way a factory hands them over: any common format, any mode.

Every image becomes RGB uint8 HxWx3. Conversions (documented, never silent
failures): EXIF orientation applied; greyscale and palette expanded to RGB;
RGBA composited on black; 16-bit scaled to 8-bit by >> 8. Unreadable or
truncated files raise UserInputError naming the file.
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import List, Union

import numpy as np

from .errors import UserInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(source: Union[str, Path], what: str = "image folder") -> List[Path]:
    """Sorted image files of a folder (non-recursive) or a glob; error if none."""
    s = str(source)
    if any(c in s for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(s))]
    else:
        p = Path(s)
        if not p.exists():
            raise UserInputError(f"{p}: {what} does not exist")
        if p.is_file():
            files = [p]
        else:
            files = sorted(f for f in p.iterdir() if f.is_file())
    files = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise UserInputError(f"{s}: no images found ({what}; looked for "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Decode one file to RGB uint8 [H, W, 3]."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb8(im, path)
    except FileNotFoundError:
        raise UserInputError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserInputError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from None


def to_rgb8(im, path) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.uint32)
        a = (a >> 8) if a.max(initial=0) > 255 else a
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        from PIL import Image
        im = im.convert("RGBA")
        black = Image.new("RGB", im.size, (0, 0, 0))
        black.paste(im, mask=im.split()[-1])
        im = black
    a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
        raise UserInputError(f"{path}: unsupported image layout {a.shape}")
    return np.ascontiguousarray(a)


def as_rgb8(image, name: str = "image") -> np.ndarray:
    """Accept a path or an array (HxW, HxWx1/3/4 uint8/uint16/float in [0,1])."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise UserInputError(f"{name}: expected HxW or HxWx{{1,3,4}} array, got shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise UserInputError(f"{name}: array contains NaN or Inf")
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise UserInputError(f"{name}: unsupported dtype {a.dtype} (use uint8, uint16 or float)")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    return np.ascontiguousarray(a)
