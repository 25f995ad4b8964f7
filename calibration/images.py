"""Good-image folders for calibration and enrollment, read with careg_edge.imageio.

`read_good_images(source)` accepts a folder, a glob or a single file and returns
RGB uint8 arrays plus their paths; every file is decoded up front so that an
unreadable or truncated image fails enrollment with its name, before any work.
Conversions (greyscale/palette/RGBA/16-bit/EXIF) are those of careg_edge.imageio.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np

from careg_edge.errors import UserInputError
from careg_edge.imageio import list_images, read_image


def read_good_images(source, limit: int = 0) -> Tuple[List[np.ndarray], List[Path]]:
    files = list_images(source, what="good-image folder")
    if limit and limit > 0:
        files = files[:limit]
    images = [read_image(f) for f in files]
    if not images:
        raise UserInputError(f"{source}: no good images to read")
    return images, files
