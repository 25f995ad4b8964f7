"""One evaluation round and what it yields: the paper metrics on the test set
(image/pixel AUROC, PRO, F1-max, rates at the profile's own threshold, curves and
the worst cases) and the line metrics on every good image the profile has not seen.
A finished round is written to the round cache and its profile freed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import metrics
from .datasets import Category
from .line_metrics import (DEFAULT_TARGETS, default_threshold_for, line_metrics,
                           own_threshold_metrics, thresholds_at)
from .round_cache import save_round

CURVE_POINTS = 400   # points kept of each ROC / PRO curve
WORST_N = 6          # worst false positives and missed defects kept as thumbnails


@dataclass
class RoundJob:
    """A (category, method, K, round) in progress: its profile, then its scores."""

    cat: str
    cfg: object          # EvalConfig
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
