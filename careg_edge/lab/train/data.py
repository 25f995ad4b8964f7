"""Training data: normal images per category, the query + support draw, and the
query's applied transform.

Any number of dataset roots in the MVTec AD layout. Each category contributes
CAT/train/good (and CAT/validation/good when present); a `test/` folder is never
listed, opened or read. Categories stay separate because every step pairs a
query with k support images of its own category. Synthetic normal categories
(lab/synth_categories.py) can be added with `synthetic=N`.

The query is moved by a random affine A (rotation, scale, translation) that the
STNs have to undo; A is known here, and the θ loss (losses.py) uses its inverse.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from ...errors import UserInputError
from ...imageio import read_image
from ..datasets import category_dirs, normal_images

GOOD_FOLDERS = ("train/good", "validation/good")  # the only folders training reads


def discover(roots: Sequence, exclude: Sequence[str] = (), min_images: int = 2) -> Dict[str, List[Path]]:
    """{"root/CAT": sorted normal image files} over every root (MVTec layout)."""
    if not roots:
        raise UserInputError("no dataset roots given; pass at least one folder in MVTec AD layout")
    cats: Dict[str, List[Path]] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise UserInputError(f"{root}: dataset root does not exist or is not a folder")
        found = category_dirs(root)  # a single category may be given directly
        if not found:
            raise UserInputError(f"{root}: no CATEGORY/train/good folders (MVTec AD layout expected)")
        for d in found:
            if d.name in exclude:
                continue
            files = normal_images(d, GOOD_FOLDERS)
            if len(files) < min_images:
                raise UserInputError(f"{d}: {len(files)} normal images, need at least {min_images} "
                                     f"(1 query + k support); add images or --exclude {d.name}")
            cats[f"{root.name}/{d.name}"] = files
    unknown = set(exclude) - {d.name for r in roots for d in category_dirs(Path(r))}
    if unknown:
        raise UserInputError(f"--exclude {sorted(unknown)[0]}: no such category under the roots")
    if not cats:
        raise UserInputError("every category was excluded; nothing to train on")
    return cats


def load_images(files: Sequence[Path], size: int) -> torch.Tensor:
    """Decode + resize once, kept in memory as uint8 [N,3,S,S] (small sets, CPU speed)."""
    from ...preprocess import resize
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        out[i] = resize(read_image(f), (size, size))  # unreadable file -> one-line error
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def training_images(cfg) -> Dict[str, torch.Tensor]:
    """{category: uint8 [N,3,S,S]}: the discovered real categories, then the first
    cfg.synthetic synthetic ones as `synthetic/<name>` (each its own category)."""
    from ..synth_categories import CATEGORIES, make_category
    images = {}
    if cfg.roots:
        cats = discover(cfg.roots, cfg.exclude, min_images=cfg.k_shot + 1 + max(cfg.holdout, 0))
        images = {c: load_images(f, cfg.image_size) for c, f in cats.items()}
    for name in CATEGORIES[:cfg.synthetic]:
        key = f"synthetic/{name}"
        if key in images:
            raise UserInputError(f"{key}: a dataset root is also named 'synthetic'; rename it "
                                 "or drop --synthetic")
        arr = make_category(name, cfg.synthetic_images, cfg.image_size, cfg.seed)
        images[key] = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    return images


def split_holdout(images: Dict[str, torch.Tensor], holdout: int):
    """-> (training images, held-out images): the last `holdout` of each category
    are kept out of training for the validation diagnostics."""
    if holdout <= 0:
        return images, {}
    return ({c: v[:-holdout] for c, v in images.items()},
            {c: v[-holdout:] for c, v in images.items()})


def random_affine(n: int, cfg, gen: torch.Generator) -> torch.Tensor:
    """[n,2,3] random rotation·scale + translation (the query's misalignment)."""
    u = lambda: torch.rand(n, generator=gen) * 2 - 1  # noqa: E731
    a = u() * math.radians(cfg.max_rotation)
    s = 1 + u() * cfg.max_scale
    c, si = torch.cos(a) * s, torch.sin(a) * s
    t = torch.stack([u(), u()], 1) * cfg.max_translation
    return torch.stack([torch.stack([c, -si, t[:, 0]], 1), torch.stack([si, c, t[:, 1]], 1)], 1)


def augment(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x sampled at θ·p (the θ convention of DEVELOPERS.md), border padding."""
    from ...encoder.stn import base_grid, warp
    return warp(x, theta.to(x), base_grid(*x.shape[-2:]).to(x))


class PairSampler:
    """Each draw: a category (uniformly, so small categories count), a query and
    k distinct other images of that category as its support set."""

    def __init__(self, images: Dict[str, torch.Tensor], k: int, seed: int):
        self.names, self.images, self.k = sorted(images), images, k
        self.rng = np.random.default_rng(seed)

    def draw(self, batch: int):
        q, s = [], []
        for _ in range(batch):
            imgs = self.images[self.names[self.rng.integers(len(self.names))]]
            idx = self.rng.choice(len(imgs), self.k + 1, replace=False)
            q.append(imgs[idx[0]])
            s.append(imgs[idx[1:]])
        return torch.stack(q), torch.stack(s)  # [B,3,S,S], [B,k,3,S,S] uint8
