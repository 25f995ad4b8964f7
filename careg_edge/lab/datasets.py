"""The evaluation's view of a dataset in the MVTec AD layout: which files are
support candidates, test images (with masks) and unseen good images, and the
seeded support sets. Files are listed here, never opened (except mask headers).

Two good-image sets, on purpose:
* the **test set** (`Category.test`): test/good (or validation/good when a copy has
  no test/good) plus the defective images; the paper metrics (AUROC, PRO, F1) use it,
  so tables stay comparable with the literature and with earlier runs;
* the **unseen good set** of a round (`Category.unseen_good`): every good image the
  round's profile has not seen: train/good minus that round's support, test/good and
  validation/good. A line sees only unseen parts, so the false-alarm rate measured on
  all of them is what a line would see, and with hundreds of images it resolves 1 %.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import imageio
from ..container import atomic_write_bytes
from ..errors import FormatError, UserInputError


@dataclass
class TestItem:
    path: Path
    defect_type: str            # "good" or the folder name under test/
    mask: Optional[Path]        # None for good images (all-normal mask)

    @property
    def label(self) -> int:
        return int(self.defect_type != "good")


@dataclass
class Category:
    name: str
    root: Path
    train: List[Path]
    test: List[TestItem]
    good_source: str = "test/good"   # where the good test images come from
    # validation/good images that are not already in `test` (when test/good exists)
    extra_good: List[Path] = field(default_factory=list)

    def unseen_good(self, support: Sequence[str]) -> List[Path]:
        """Every good image a profile enrolled on `support` (train/good names) has not
        seen: train/good minus the support, then the test set's goods, then extra_good."""
        held = set(support)
        return ([p for p in self.train if p.name not in held]
                + [t.path for t in self.test if not t.label] + list(self.extra_good))

    def good_sources(self, support: Sequence[str]) -> Dict[str, int]:
        """How many unseen good images each folder contributes to a round."""
        held = set(support)
        out = {"train/good": sum(p.name not in held for p in self.train),
               self.good_source: sum(1 for t in self.test if not t.label)}
        if self.extra_good:
            out["validation/good"] = len(self.extra_good)
        return out


def category_dirs(root: Path) -> List[Path]:
    """Category folders under `root` (those with train/good), or [root] when `root` is
    itself one. Shared by evaluation (which also needs test/) and training."""
    root = Path(root)
    if (root / "train" / "good").is_dir():
        return [root]
    return [d for d in sorted(root.iterdir()) if (d / "train" / "good").is_dir()]


def normal_images(cat_dir: Path, folders: Sequence[str] = ("train/good", "validation/good")) -> List[Path]:
    """The category's normal image files in `folders` (those that exist), sorted per folder."""
    return [f for g in folders if (Path(cat_dir) / g).is_dir()
            for f in sorted((Path(cat_dir) / g).iterdir())
            if f.is_file() and f.suffix.lower() in imageio.IMAGE_SUFFIXES]


def find_categories(root: Path) -> List[str]:
    """Folders of `root` in the MVTec AD layout (train/good and test/)."""
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"--data {root}: folder does not exist")
    cats = [p.name for p in category_dirs(root) if p != root and (p / "test").is_dir()]
    if not cats:
        raise UserInputError(f"--data {root}: no category folder with train/good and test/ "
                             "(expected the MVTec AD layout ROOT/CAT/train/good, ROOT/CAT/test/<type>)")
    return cats


def load_category(root: Path, name: str) -> Category:
    """List (never open) the files of one category; pair each defect image with its mask."""
    base = Path(root) / name
    if not (base / "train" / "good").is_dir() or not (base / "test").is_dir():
        raise UserInputError(f"--category {name}: {base} lacks train/good or test/ "
                             f"(available: {', '.join(find_categories(root))})")
    train = imageio.list_images(base / "train" / "good", "train/good folder")
    test: List[TestItem] = []
    for tdir in sorted(p for p in (base / "test").iterdir() if p.is_dir()):
        for img in imageio.list_images(tdir, f"test/{tdir.name} folder"):
            test.append(TestItem(img, tdir.name, None if tdir.name == "good" else _mask_of(base, tdir.name, img)))
    if not any(t.label for t in test):
        raise UserInputError(f"{base}/test: no defective images (only test/good)")
    val = base / "validation" / "good"
    validation = imageio.list_images(val, "validation/good folder") if val.is_dir() else []
    if all(t.label for t in test) and validation:
        # e.g. the partial MVTec LOCO copy: no test/good. Image-level metrics need good
        # images, and validation/good is disjoint from train/good (supports come only
        # from there), so it stands in; results record the substitution.
        return Category(name, base, train, [TestItem(p, "good", None) for p in validation] + test,
                        "validation/good")
    return Category(name, base, train, test, "test/good", validation)


def _mask_of(base: Path, dtype: str, img: Path) -> Path:
    for cand in (f"{img.stem}_mask.png", f"{img.stem}.png"):
        m = base / "ground_truth" / dtype / cand
        if m.is_file():
            return m
    raise UserInputError(f"{img}: no mask {base}/ground_truth/{dtype}/{img.stem}_mask.png; "
                         "every defective test image needs a mask")


def read_mask(item: TestItem, shape) -> np.ndarray:
    if item.mask is None:
        return np.zeros(shape, bool)
    from PIL import Image
    with Image.open(item.mask) as im:
        m = np.asarray(im.convert("L")) >= 128
    if m.shape != tuple(shape):
        raise UserInputError(f"{item.mask}: mask is {m.shape[1]}x{m.shape[0]} but image {item.path} "
                             f"is {shape[1]}x{shape[0]} (WxH); masks must match their images")
    return m


# --------------------------------------------------------------------------- support sets
def draw_support(train: Sequence[str], k: int, category: str, rnd: int, seed: int) -> List[str]:
    """K distinct names from `train`, a pure function of (seed, category, K, round)."""
    if k > len(train):
        raise UserInputError(f"--shots {k}: category {category!r} has only {len(train)} "
                             "train/good images; use fewer shots")
    rng = np.random.default_rng([seed, zlib.crc32(category.encode()), k, rnd])
    pick = rng.choice(len(train), size=k, replace=False)
    return sorted(train[i] for i in pick)


def support_sets(cat: Category, shots: Sequence[int], rounds: int, seed: int,
                 folder: Path) -> Dict[str, List[str]]:
    """{"K/round": [names]} loaded from `folder/<category>.json`, drawn and saved if absent."""
    path = Path(folder) / f"{cat.name}.json"
    sets: Dict[str, List[str]] = {}
    if path.exists():
        try:
            sets = json.loads(path.read_text())["sets"]
        except (ValueError, KeyError, TypeError):
            raise FormatError(f"{path}: not a support-set file; delete it to draw the sets again") from None
    names = [p.name for p in cat.train]
    changed = False
    for k in shots:
        for r in range(rounds):
            key = f"{k}/{r}"
            if key not in sets:
                sets[key] = draw_support(names, k, cat.name, r, seed)
                changed = True
            missing = set(sets[key]) - set(names)
            if missing:
                raise UserInputError(f"{path}: support set {key} names {sorted(missing)[0]}, which "
                                     f"is not in {cat.root}/train/good; delete the file to redraw")
    if changed:
        doc = {"category": cat.name, "seed": seed, "source": "train/good", "sets": sets}
        atomic_write_bytes(path, json.dumps(doc, indent=1, sort_keys=True).encode())
    return sets
