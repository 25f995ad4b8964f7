"""Good-image folders for re-calibration, read with careg_edge.imageio.

`GoodImages(source)` is the lenient reader for re-calibration on the line: a folder
of production images often holds a few truncated or half-copied files, and one of
them should not cost the other thousand. It decodes a chunk at a time (a line's
folder may not fit in memory), skips unreadable files and names them afterwards.
Conversions (greyscale/palette/RGBA/16-bit/EXIF) are those of careg_edge.imageio.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np

from careg_edge.errors import UserInputError
from careg_edge.imageio import list_images, read_image


class GoodImages:
    """The readable images of a folder or glob, decoded `chunk` at a time."""

    def __init__(self, source, what: str = "good-image folder"):
        self.source, self.what = str(source), what
        self.files = list_images(source, what=what)   # error when there is no image file
        self.unreadable: List[Path] = []
        self.read = 0

    def chunks(self, size: int = 16) -> Iterator[Tuple[List[np.ndarray], List[Path]]]:
        images, names = [], []
        for f in self.files:
            try:
                images.append(read_image(f))
            except UserInputError:
                self.unreadable.append(f)
                continue
            names.append(f)
            self.read += 1
            if len(images) == size:
                yield images, names
                images, names = [], []
        if images:
            yield images, names
        if not self.read:
            raise UserInputError(f"{self.what} {self.source}: none of its {len(self.files)} "
                                 f"image files could be read ({self.unreadable_names()})")

    def unreadable_names(self, shown: int = 8) -> str:
        """'a.png, b.png and 3 more': one line however many files were skipped."""
        names = [f.name for f in self.unreadable]
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more
