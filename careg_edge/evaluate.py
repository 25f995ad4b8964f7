"""The few-shot evaluation protocol (RegAD / CAReg papers), run through the public API,
plus the line metrics: false alarms and detection at calibrated thresholds.

For each category, shot count K and round r a support set of K file names is drawn
once from `train/good` by a seeded generator and saved as JSON, so every run,
estimator and backbone sees the same sets (eval_data.py). A profile is enrolled from
the support images only (its threshold is calibrated from good images only; the
calibration prior leaves the evaluated category out); only then is any file under
`test/` opened. Test images are scored as they come: scores and maps are used raw,
never normalised across the test set.

Paper metrics (image/pixel AUROC, PRO, F1-max) use the test set. Line metrics use
every good image the profile has not seen (train/good minus the support, test/good,
validation/good) against the defective test images, at each requested false-alarm
target, the threshold re-derived from the one enrollment's stored calibration
(eval_line.py). The re-calibration arm (`recalibrate` = N) re-sets each threshold from
N of the unseen goods, as `careg-edge calibrate --good` would, and measures on the rest.

The encoder is the expensive part and does not depend on the support set, so the
pending profiles of a category are enrolled first (as many as `max_profile_bytes`
holds), then the test set (in chunks whose maps fit in `max_map_bytes`) and the other
good images are streamed, each image read and encoded once per pass and scored by
every profile that has not seen it (encoder outputs are memoised by input bytes). Each
finished (category, estimator, K, round) is cached on disk as a container file; an
interrupted run resumes where it stopped, and a later run asking for another target
re-derives it from the cached scores and calibration without enrolling again. The
re-calibration arm is not cached: it is computed from the stored scores on every run,
so any N works on any finished output folder.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import imageio, metrics
from .container import read_container, write_container
from .errors import FormatError
from .progress import Progress
# the dataset walker and support sets live in eval_data; these names stay importable here
from .eval_data import (Category, TestItem, draw_support, find_categories,  # noqa: F401
                        load_category, read_mask, support_sets)
from .eval_line import (DEFAULT_RECALIBRATE, DEFAULT_TARGETS, default_threshold_for,
                        default_threshold_from_good, line_metrics, own_threshold_metrics,
                        recalibration, thresholds_at)

LOCALISATION = {"feature-unwarp": "unwarp", "registered-frame": "registered"}
# version 2: rounds carry the unseen-good scores, the calibration and the line metrics
CACHE_KIND, CACHE_VERSION = "careg-eval-round", 2
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
    # enroll with prior_exclude=(category,): a calibration prior learned across
    # categories must not have seen the one being evaluated
    exclude_own_category: bool = True

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

    def enroll_kwargs(self, category: str) -> Dict[str, object]:
        """Keyword arguments of Inspector.enroll for one category (recorded per round)."""
        opts = dict(self.enroll_options)
        opts["localisation"] = LOCALISATION[self.localisation]  # the pipeline's names
        # no image_score in a config means max, whatever the library's default is today
        # (the CLI puts every other rule in the config, so the method label names it)
        opts.setdefault("image_score", "max")
        kw = dict(estimator=self.estimator, augment=self.augment, seed=self.seed, **opts)
        if self.exclude_own_category:
            kw["prior_exclude"] = (category,)
        return kw


# --------------------------------------------------------------------------- cache
def cache_path(outdir: Path, cat: str, cfg: EvalConfig, k: int, rnd: int) -> Path:
    return Path(outdir) / "cache" / cat / f"{cfg.label()}-{cfg.key()}-K{k}-r{rnd}.careg-eval"


def save_round(path: Path, res: dict, arrays: Dict[str, np.ndarray]) -> None:
    write_container(path, arrays, {"result": json.dumps(res)}, CACHE_KIND, CACHE_VERSION)


def load_round(path: Path):
    """(result dict, arrays) or None when absent or unreadable (then it is recomputed)."""
    path = Path(path)
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
    enroll_kwargs: Dict[str, object] = field(default_factory=dict)
    scores: List[float] = field(default_factory=list)
    flagged: List[bool] = field(default_factory=list)
    maps: List[np.ndarray] = field(default_factory=list)
    infer_ms: List[float] = field(default_factory=list)
    threshold: float = float("nan")
    unseen: Dict[str, float] = field(default_factory=dict)  # path -> score, outside the test set
    result: Dict[str, object] = field(default_factory=dict)   # test-set metrics, then the line ones
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)


def _saved_ms(memo) -> float:
    return memo.saved_ms if memo is not None else 0.0


def _enroll(insp, memo, job: RoundJob, images: List[np.ndarray]) -> None:
    job.enroll_kwargs = job.cfg.enroll_kwargs(job.cat)
    before, t = _saved_ms(memo), time.perf_counter()
    job.profile = insp.enroll(images, **job.enroll_kwargs)
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


def _calibration(profile) -> Optional[dict]:
    """The profile's stored calibration as plain JSON (None when it has none)."""
    calib = (getattr(profile, "info", None) or {}).get("calibration")
    if calib is None:
        return None
    plain = lambda o: o.tolist() if hasattr(o, "tolist") else str(o)  # noqa: E731
    return json.loads(json.dumps(calib, default=plain))


def finish_test_metrics(job: RoundJob, cat: Category, masks: List[np.ndarray]) -> None:
    """Paper metrics of a round whose test set is scored (job.result, job.arrays); frees
    the maps, which only these metrics need."""
    y = np.array([t.label for t in cat.test], np.uint8)
    s = np.array(job.scores, np.float64)
    flagged = np.array(job.flagged, bool)
    pix_auroc, pix_roc = metrics.pixel_auroc_and_curve(masks, job.maps, CURVE_POINTS)
    fpr, pro = metrics.pro_curve(masks, job.maps, 0.3)
    f1, f1_thr = metrics.f1_max(y, s)
    res = {
        "category": cat.name, "method": job.cfg.label(), "config": job.cfg.__dict__, "shots": job.k,
        "round": job.rnd, "support": job.support, "good_test_source": cat.good_source,
        "enroll_kwargs": job.enroll_kwargs,
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
    job.result, job.arrays = res, arrays
    job.maps.clear()


def finish_round(job: RoundJob, cat: Category, targets: Sequence[float] = DEFAULT_TARGETS,
                 threshold_for: Callable = default_threshold_for) -> dict:
    """Adds the line metrics to a round with test metrics and unseen-good scores;
    writes the cache file; frees the profile."""
    res, arrays = job.result, job.arrays
    unseen = _unseen_scores(job, cat)
    arrays["unseen_scores"] = unseen
    res.update(_line_fields(job, cat, unseen, arrays["scores"][arrays["labels"] == 1],
                            targets, threshold_for))
    save_round(job.cache, res, arrays)
    job.profile, job.arrays = None, {}
    return res


def _unseen_scores(job: RoundJob, cat: Category) -> np.ndarray:
    """Scores of the round's unseen good images, in Category.unseen_good order."""
    by_path = dict(job.unseen)
    by_path.update((str(t.path), sc) for t, sc in zip(cat.test, job.scores) if not t.label)
    paths = cat.unseen_good(job.support)
    missing = [p for p in paths if str(p) not in by_path]
    if missing:  # a bug, not bad input: every unseen good image must have been scored
        raise RuntimeError(f"{len(missing)} unseen good images were not scored, e.g. {missing[0]}")
    return np.array([by_path[str(p)] for p in paths], np.float64)


def _line_fields(job: RoundJob, cat: Category, unseen: np.ndarray, defects: np.ndarray,
                 targets: Sequence[float], threshold_for: Callable) -> dict:
    calib = _calibration(job.profile)
    own_target = (calib or {}).get("target_fpr")
    own = own_threshold_metrics(unseen, defects, job.threshold, own_target)
    return {
        "n_unseen_good": int(unseen.size), "unseen_good_sources": cat.good_sources(job.support),
        "unseen_files": [str(p.relative_to(cat.root)) for p in cat.unseen_good(job.support)],
        "unseen_fpr_at_threshold": own["fpr"], "line_own_threshold": own,
        "calibration": calib,
        "line": line_metrics(unseen, defects, thresholds_at(calib, targets, threshold_for)),
    }


def complete_targets(res: dict, arrays: Dict[str, np.ndarray], targets: Sequence[float],
                     threshold_for: Callable = default_threshold_for) -> bool:
    """Add line metrics for targets a cached round lacks, from its stored scores and
    calibration (no enrollment); True when anything was added."""
    have = {row["target_fpr"] for row in res.get("line", [])}
    missing = [t for t in targets if t not in have]
    if not missing:
        return False
    defects = arrays["scores"][arrays["labels"] == 1]
    new = line_metrics(arrays["unseen_scores"], defects,
                       thresholds_at(res.get("calibration"), missing, threshold_for))
    res["line"] = sorted(res.get("line", []) + new, key=lambda row: row["target_fpr"])
    return True


# --------------------------------------------------------------------------- driver
def default_inspector(cfg: EvalConfig):
    from .pipeline import Inspector
    return Inspector(model=cfg.model, backend=cfg.backend)


def evaluate(data: Path, outdir: Path, configs: Sequence[EvalConfig], shots: Sequence[int],
             rounds: int, categories: Optional[Sequence[str]] = None, seed: int = 0,
             support_dir: Optional[Path] = None, make_inspector=default_inspector,
             progress: bool = True, max_map_bytes: float = 2e9,
             targets: Sequence[float] = DEFAULT_TARGETS,
             threshold_for: Callable = default_threshold_for,
             max_profile_bytes: float = 3e9, recalibrate: int = DEFAULT_RECALIBRATE,
             threshold_from_good: Callable = default_threshold_from_good) -> dict:
    """Run (or resume) the protocol; returns {"results": [...per-round results...], ...}.

    targets: false-alarm rates at which the line metrics are measured, each threshold
    re-derived by threshold_for(profile.info["calibration"], target) from one enrollment.
    max_map_bytes / max_profile_bytes: anomaly maps / enrolled profiles held at once
    (more = fewer passes over the test set / the other good images).
    recalibrate: N good images per round for the re-calibration arm (0: none), drawn
    from the round's unseen goods; threshold_from_good sets each target's threshold."""
    data, outdir = Path(data), Path(outdir)
    targets = sorted({float(t) for t in targets})
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
    todo = [j for j in plan if not _cached(j, targets, threshold_for)]
    bar = Progress(sum(_work(c, j) for c in cats for j in todo if j.cat == c.name), "eval",
                   progress and bool(todo))
    inspectors: Dict[tuple, object] = {}
    with bar:
        for cat in cats:
            _run_category(cat, [j for j in todo if j.cat == cat.name], inspectors, make_inspector,
                          bar, max_map_bytes, targets, threshold_for, max_profile_bytes)
    results = []
    for j in plan:
        got = load_round(j.cache)
        if got is None or got[0].get("support") != j.support:
            raise FormatError(f"{j.cache}: result missing after the run; delete it and run again")
        res, arrays = got
        res["line"] = [row for row in res["line"] if row["target_fpr"] in targets]
        if recalibrate:
            res["recalibration"] = recalibration(
                arrays["unseen_scores"], arrays["scores"][arrays["labels"] == 1], targets,
                recalibrate, seed, j.cat, j.k, j.rnd, threshold_from_good)
        res["cache"] = str(j.cache.relative_to(outdir))
        results.append(res)
    return {"data": str(data), "shots": list(shots), "rounds": rounds, "seed": seed,
            "targets": targets, "recalibrate": recalibrate, "support_dir": str(support_dir),
            "results": results}


def _cached(job: RoundJob, targets: Sequence[float], threshold_for: Callable) -> bool:
    """A cached round counts only if it was scored with the same support set; targets
    it lacks are added from its stored scores."""
    got = load_round(job.cache)
    if got is None or got[0].get("support") != job.support:
        return False
    res, arrays = got
    if complete_targets(res, arrays, targets, threshold_for):
        save_round(job.cache, res, arrays)
    return True


def _work(cat: Category, job: RoundJob) -> int:
    """Progress units of one round: its enrollment and every image it scores."""
    return 1 + len(cat.test) + len(cat.unseen_good(job.support)) - sum(1 for t in cat.test if not t.label)


def _map_bytes(cat: Category) -> int:
    """Bytes of one round's anomaly maps (float32 at image size), from file headers only."""
    from PIL import Image
    total = 0
    for t in cat.test:
        with Image.open(t.path) as im:  # header only: no pixel data decoded
            total += im.size[0] * im.size[1] * 4
    return total


def _profile_bytes(profile) -> int:
    """Memory one enrolled profile holds: its tensors, twice (the scoring road may keep
    its own prepared copy)."""
    tensors = getattr(profile, "tensors", None) or {}
    return 2 * sum(int(getattr(v, "nbytes", 0)) for v in tensors.values())


def _run_category(cat: Category, jobs: List[RoundJob], inspectors, make_inspector, bar,
                  max_map_bytes: float, targets: Sequence[float] = DEFAULT_TARGETS,
                  threshold_for: Callable = default_threshold_for,
                  max_profile_bytes: float = 3e9) -> None:
    """Enroll as many profiles as `max_profile_bytes` holds (a group); stream the test
    set once per chunk of the group whose anomaly maps fit in `max_map_bytes`; then
    stream the other good images once for the whole group (scores only, no maps)."""
    if not jobs:
        return
    group_size = max(1, int(max_map_bytes // max(_map_bytes(cat), 1)))
    by_model: Dict[tuple, List[RoundJob]] = {}
    for j in jobs:
        by_model.setdefault((j.cfg.model, j.cfg.backend), []).append(j)
    train_by_name = {p.name: p for p in cat.train}
    for key, pending in by_model.items():
        if key not in inspectors:
            insp = make_inspector(pending[0].cfg)
            inspectors[key] = (insp, memoise_encoder(insp))
        insp, memo = inspectors[key]
        # same support set adjacent: the encoder memo serves the other estimators
        pending = sorted(pending, key=lambda j: (j.k, j.rnd, j.cfg.label()))
        while pending:
            group, held = [], 0
            # every profile of the group exists before any test file is opened
            while pending and (not group or held < max_profile_bytes):
                j = pending.pop(0)
                _enroll(insp, memo, j, [imageio.read_image(train_by_name[n]) for n in j.support])
                held += _profile_bytes(j.profile)
                group.append(j)
                bar.update(1, f"{cat.name} enroll {j.cfg.label()} K={j.k} r={j.rnd}")
            for g in range(0, len(group), group_size):
                _score_test_set(insp, memo, cat, group[g:g + group_size], bar)
            _score_other_goods(insp, cat, group, bar)
            for j in group:
                finish_round(j, cat, targets, threshold_for)


def _score_test_set(insp, memo, cat: Category, chunk: List[RoundJob], bar) -> None:
    """Each test image read once and scored by every profile of the chunk (maps kept
    for the pixel metrics), then the chunk's test-set metrics."""
    for item in cat.test:
        image = imageio.read_image(item.path)
        for j in chunk:
            _score(insp, memo, j, image)
        bar.update(len(chunk), f"{cat.name} inspect")
    masks = [read_mask(t, m.shape) for t, m in zip(cat.test, chunk[0].maps)]
    for j in chunk:
        finish_test_metrics(j, cat, masks)


def _score_other_goods(insp, cat: Category, chunk: List[RoundJob], bar) -> None:
    """Good images outside the test set (train/good, validation/good): each read once,
    and scored (image score only, no map kept) by every profile of the group that did
    not enroll on it; the profiles score it one after the other, so the encoder memo
    encodes it once."""
    supports = [set(j.support) for j in chunk]
    others = [(p, True) for p in cat.train] + [(p, False) for p in cat.extra_good]
    for path, in_train in others:
        jobs = [j for j, sup in zip(chunk, supports) if not (in_train and path.name in sup)]
        if not jobs:
            continue
        image = imageio.read_image(path)
        for j in jobs:
            j.unseen[str(path)] = float(insp.inspect(image, j.profile).score)
        bar.update(len(jobs), f"{cat.name} unseen good")
