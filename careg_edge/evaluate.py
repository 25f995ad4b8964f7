"""The few-shot evaluation protocol (RegAD / CAReg papers), run through the public API.

For each category, shot count K and round r a support set of K file names is drawn
once from `train/good` by a seeded generator and saved as JSON, so every run,
estimator and backbone sees the same sets. A profile is enrolled from the support
images only (its threshold is calibrated from good images only); only then is any
file under `test/` opened. Test images are scored as they come: scores and maps
are used raw, never normalised across the test set.

The encoder is the expensive part and does not depend on the support set, so all
pending profiles of a category are enrolled first and the test set is streamed
once, each image scored by every profile (the encoder output of the last image
is memoised). Each finished (category, estimator, K, round) is cached on disk as a
container file; an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import imageio, metrics
from .container import atomic_write_bytes, read_container, write_container
from .errors import FormatError, UserInputError

LOCALISATION = {"feature-unwarp": "unwarp", "registered-frame": "registered"}
CACHE_KIND, CACHE_VERSION = "careg-eval-round", 1
CURVE_POINTS = 400
WORST_N = 6


@dataclass
class EvalConfig:
    """One evaluated method: everything that changes a profile or a score."""

    estimator: str = "patchcore"
    model: Optional[str] = None
    backend: str = "auto"
    augment: str = "auto"
    localisation: str = "feature-unwarp"
    seed: int = 0
    enroll_options: Dict[str, object] = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def label(self) -> str:
        """Method name in tables: the estimator, plus whatever differs from the defaults."""
        parts = [self.estimator]
        if self.localisation != "feature-unwarp":
            parts.append(self.localisation)
        if self.augment != "auto":
            parts.append(f"aug-{self.augment}")
        if self.enroll_options.get("image_score", "max") != "max":
            parts.append(f"score-{self.enroll_options['image_score']}")
        return "+".join(parts)


# --------------------------------------------------------------------------- dataset walker
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


def find_categories(root: Path) -> List[str]:
    """Folders of `root` in the MVTec AD layout (train/good and test/)."""
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"--data {root}: folder does not exist")
    cats = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir() and (p / "test").is_dir())
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
    good_source = "test/good"
    if all(t.label for t in test) and (base / "validation" / "good").is_dir():
        # e.g. the partial MVTec LOCO copy: no test/good. Image-level metrics need good
        # images, and validation/good is disjoint from train/good (supports come only
        # from there), so it stands in; results record the substitution.
        good_source = "validation/good"
        test = [TestItem(p, "good", None) for p in
                imageio.list_images(base / "validation" / "good", "validation/good folder")] + test
    return Category(name, base, train, test, good_source)


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


# --------------------------------------------------------------------------- cache
def cache_path(outdir: Path, cat: str, cfg: EvalConfig, k: int, rnd: int) -> Path:
    return Path(outdir) / "cache" / cat / f"{cfg.label()}-{cfg.key()}-K{k}-r{rnd}.careg-eval"


def save_round(path: Path, res: dict, arrays: Dict[str, np.ndarray]) -> None:
    write_container(path, arrays, {"result": json.dumps(res)}, CACHE_KIND, CACHE_VERSION)


def load_round(path: Path):
    """(result dict, arrays) or None when absent or unreadable (then it is recomputed)."""
    if not path.exists():
        return None
    try:
        arrays, meta = read_container(path, CACHE_KIND, CACHE_VERSION)
        return json.loads(meta["result"]), arrays
    except (FormatError, KeyError, ValueError):
        return None


# --------------------------------------------------------------------------- encoder memo
class _MemoRuntime:
    """Wraps a Runtime: remembers recent encoder outputs by input bytes (LRU, bounded).

    Estimators enrolled on the same support set encode exactly the same batches
    (originals, augmented views, synthetic calibration defects), and every profile
    of a chunk scores the same test image: both are encoded once."""

    def __init__(self, inner, max_bytes: float = 1.5e9):
        from collections import OrderedDict
        # saved_ms: encoder time a hit avoided, added back to enroll/infer times so
        # the reported timings are what a user without the memo would see
        self.inner, self.max_bytes, self.saved_ms, self.misses = inner, max_bytes, 0.0, 0
        self._lru, self._bytes = OrderedDict(), 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, batch):
        key = hashlib.sha1(np.ascontiguousarray(batch).view(np.uint8)).digest() + bytes(str(batch.shape), "ascii")
        if key in self._lru:
            self._lru.move_to_end(key)
            out, ms = self._lru[key]
            self.saved_ms += ms
            return out
        t = time.perf_counter()
        out = self.inner.infer(batch)
        self.misses += 1
        self._lru[key] = (out, (time.perf_counter() - t) * 1e3)
        self._bytes += sum(v.nbytes for v in out.values())
        while self._bytes > self.max_bytes and len(self._lru) > 1:
            _, (old, _) = self._lru.popitem(last=False)
            self._bytes -= sum(v.nbytes for v in old.values())
        return out


def memoise_encoder(insp) -> Optional[_MemoRuntime]:
    rt = getattr(insp, "runtime", None)
    if rt is None or not hasattr(rt, "infer"):
        return None
    memo = _MemoRuntime(rt)
    insp.runtime = memo
    return memo


# --------------------------------------------------------------------------- progress
class Progress:
    """One line on stderr: done/total, rate and ETA (no dependency, quiet when disabled)."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.enabled, self.t0, self.what = max(total, 1), 0, enabled, time.time(), ""
        self._last = 0.0

    def step(self, n: int = 1, what: str = "") -> None:
        import sys
        self.done += n
        self.what = what or self.what
        now = time.time()
        if not self.enabled or (now - self._last < 0.5 and self.done < self.total):
            return
        self._last = now
        frac = min(self.done / self.total, 1.0)
        eta = (now - self.t0) * (1 - frac) / frac if frac > 0 else 0.0
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        sys.stderr.write(f"\r[{bar}] {100 * frac:5.1f}% {self.done}/{self.total} "
                         f"{self.what[:40]:<40} ETA {eta / 60:5.1f} min")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------- one round
@dataclass
class RoundJob:
    cat: str
    cfg: EvalConfig
    k: int
    rnd: int
    support: List[str]
    cache: Path
    profile: object = None
    enroll_s: float = 0.0
    scores: List[float] = field(default_factory=list)
    flagged: List[bool] = field(default_factory=list)
    maps: List[np.ndarray] = field(default_factory=list)
    infer_ms: List[float] = field(default_factory=list)
    threshold: float = float("nan")


def _saved_ms(memo) -> float:
    return memo.saved_ms if memo is not None else 0.0


def _enroll(insp, memo, job: RoundJob, images: List[np.ndarray]) -> None:
    opts = dict(job.cfg.enroll_options)
    opts["localisation"] = LOCALISATION[job.cfg.localisation]  # the pipeline's names
    # no image_score in a config means max (how every cached round was made), whatever
    # the library's default is today
    opts.setdefault("image_score", "max")
    before, t = _saved_ms(memo), time.perf_counter()
    job.profile = insp.enroll(images, estimator=job.cfg.estimator, augment=job.cfg.augment,
                              seed=job.cfg.seed, **opts)
    job.enroll_s = time.perf_counter() - t + (_saved_ms(memo) - before) / 1e3


def _score(insp, memo, job: RoundJob, image: np.ndarray) -> None:
    before, t = _saved_ms(memo), time.perf_counter()
    r = insp.inspect(image, job.profile)
    ms = (time.perf_counter() - t) * 1e3 + _saved_ms(memo) - before  # encoder reuse added back
    amap = np.asarray(r.anomaly_map, np.float32)
    if amap.shape != image.shape[:2]:
        import cv2
        amap = cv2.resize(amap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    job.scores.append(float(r.score))
    job.flagged.append(bool(r.is_defect))
    job.maps.append(amap)
    job.infer_ms.append(ms)
    job.threshold = float(r.threshold)


def _thumb(a: np.ndarray, side: int = 128) -> np.ndarray:
    import cv2
    h, w = a.shape
    s = side / max(h, w)
    return cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def finish_round(job: RoundJob, cat: Category, masks: List[np.ndarray]) -> dict:
    """Metrics of one finished round; writes the cache file; frees the maps."""
    y = np.array([t.label for t in cat.test], np.uint8)
    s = np.array(job.scores, np.float64)
    flagged = np.array(job.flagged, bool)
    pix_auroc, pix_roc = metrics.pixel_auroc_and_curve(masks, job.maps, CURVE_POINTS)
    fpr, pro = metrics.pro_curve(masks, job.maps, 0.3)
    f1, f1_thr = metrics.f1_max(y, s)
    res = {
        "category": cat.name, "method": job.cfg.label(), "config": job.cfg.__dict__, "shots": job.k,
        "round": job.rnd, "support": job.support, "good_test_source": cat.good_source,
        "image_auroc": metrics.auroc(y, s), "pixel_auroc": pix_auroc,
        "aupro": metrics.aupro_from_curve(fpr, pro, 0.3), "f1_max": f1, "f1_threshold": f1_thr,
        "fpr_at_threshold": float(flagged[y == 0].mean()) if (y == 0).any() else float("nan"),
        "detection_rate_at_threshold": float(flagged[y == 1].mean()),
        "threshold": job.threshold, "enroll_s": job.enroll_s,
        "infer_ms": float(np.mean(job.infer_ms)), "n_test": int(y.size), "n_defective": int(y.sum()),
        "test_files": [str(t.path.relative_to(cat.root)) for t in cat.test],
    }
    arrays = {"scores": s, "labels": y, "flagged": flagged.astype(np.uint8)}
    arrays["image_roc"] = np.stack(metrics.roc_curve(y, s, CURVE_POINTS))
    arrays["pixel_roc"] = np.stack(pix_roc)
    step = max(1, fpr.size // CURVE_POINTS)
    arrays["pro_curve"] = np.stack([np.r_[fpr[::step], fpr[-1]], np.r_[pro[::step], pro[-1]]])
    good, bad = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    worst = {"false_positive": good[np.argsort(-s[good])][:WORST_N],
             "missed_defect": bad[np.argsort(s[bad])][:WORST_N]}
    res["worst"] = {kind: [int(i) for i in idx] for kind, idx in worst.items()}
    for kind, idx in worst.items():
        for j, i in enumerate(idx):
            arrays[f"{kind}_{j}"] = _thumb(job.maps[i]).astype(np.float32)
    save_round(job.cache, res, arrays)
    job.maps.clear()
    return res


# --------------------------------------------------------------------------- driver
def default_inspector(cfg: EvalConfig):
    from . import Inspector
    return Inspector(model=cfg.model, backend=cfg.backend)


def evaluate(data: Path, outdir: Path, configs: Sequence[EvalConfig], shots: Sequence[int],
             rounds: int, categories: Optional[Sequence[str]] = None, seed: int = 0,
             support_dir: Optional[Path] = None, make_inspector=default_inspector,
             progress: bool = True, max_map_bytes: float = 2e9) -> dict:
    """Run (or resume) the protocol; returns {"rounds": [...per-round results...]}."""
    data, outdir = Path(data), Path(outdir)
    cats = [load_category(data, c) for c in (categories or find_categories(data))]
    support_dir = Path(support_dir) if support_dir else outdir / "support_sets"
    plan = []
    for cat in cats:
        sets = support_sets(cat, shots, rounds, seed, support_dir)
        for cfg in configs:
            for k in shots:
                for r in range(rounds):
                    plan.append(RoundJob(cat.name, cfg, k, r, sets[f"{k}/{r}"],
                                         cache_path(outdir, cat.name, cfg, k, r)))
    todo = [j for j in plan if not _cached(j)]
    bar = Progress(sum(1 + len(c.test) for c in cats for j in todo if j.cat == c.name), progress)
    inspectors: Dict[tuple, object] = {}
    for cat in cats:
        _run_category(cat, [j for j in todo if j.cat == cat.name], inspectors, make_inspector,
                      bar, max_map_bytes)
    results = []
    for j in plan:
        got = load_round(j.cache)
        if got is None or got[0].get("support") != j.support:
            raise FormatError(f"{j.cache}: result missing after the run; delete it and run again")
        got[0]["cache"] = str(j.cache.relative_to(outdir))
        results.append(got[0])
    return {"data": str(data), "shots": list(shots), "rounds": rounds, "seed": seed,
            "support_dir": str(support_dir), "results": results}


def _cached(job: RoundJob) -> bool:
    """A cached round counts only if it was scored with the same support set."""
    got = load_round(job.cache)
    return got is not None and got[0].get("support") == job.support


def _map_bytes(cat: Category) -> int:
    """Bytes of one round's anomaly maps (float32 at image size), from file headers only."""
    from PIL import Image
    total = 0
    for t in cat.test:
        with Image.open(t.path) as im:  # header only: no pixel data decoded
            total += im.size[0] * im.size[1] * 4
    return total


def _run_category(cat: Category, jobs: List[RoundJob], inspectors, make_inspector, bar,
                  max_map_bytes: float) -> None:
    if not jobs:
        return
    per_round = _map_bytes(cat)
    group_size = max(1, int(max_map_bytes // max(per_round, 1)))
    by_model: Dict[tuple, List[RoundJob]] = {}
    for j in jobs:
        by_model.setdefault((j.cfg.model, j.cfg.backend), []).append(j)
    train_by_name = {p.name: p for p in cat.train}
    for key, group in by_model.items():
        if key not in inspectors:
            insp = make_inspector(group[0].cfg)
            inspectors[key] = (insp, memoise_encoder(insp))
        insp, memo = inspectors[key]
        # same support set adjacent: the encoder memo serves the other estimators
        group = sorted(group, key=lambda j: (j.k, j.rnd, j.cfg.label()))
        for g in range(0, len(group), group_size):
            chunk = group[g:g + group_size]
            for j in chunk:  # every profile of the chunk exists before any test file is opened
                _enroll(insp, memo, j, [imageio.read_image(train_by_name[n]) for n in j.support])
                bar.step(1, f"{cat.name} enroll {j.cfg.label()} K={j.k} r={j.rnd}")
            for item in cat.test:
                image = imageio.read_image(item.path)
                for j in chunk:
                    _score(insp, memo, j, image)
                bar.step(len(chunk), f"{cat.name} inspect")
            masks = [read_mask(t, m.shape) for t, m in zip(cat.test, chunk[0].maps)]
            for j in chunk:
                finish_round(j, cat, masks)
                j.profile = None
