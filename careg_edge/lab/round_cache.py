"""The evaluation's per-round cache: one container file per finished (category,
method, K, round) under OUTDIR/cache/, holding the round's result JSON and its
arrays (scores, labels, curves, unseen-good scores, worst-case heatmap thumbnails).

An interrupted run resumes from these files. A file counts only when it was scored
with the same support set; a later run asking for another false-alarm target gets
it re-derived from the stored scores and calibration, without enrolling again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np

from ..container import read_container, write_container
from ..errors import FormatError
from .line_metrics import default_threshold_for, line_metrics, thresholds_at

# version 2: rounds carry the unseen-good scores, the calibration and the line metrics
CACHE_KIND, CACHE_VERSION = "careg-eval-round", 2


def cache_path(outdir: Path, cat: str, cfg, k: int, rnd: int) -> Path:
    """Where the round (cat, cfg, K, rnd) is cached; cfg is an EvalConfig."""
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


def is_cached(path: Path, support: Sequence[str], targets: Sequence[float],
              threshold_for: Callable = default_threshold_for) -> bool:
    """True when `path` holds the round scored with this support set; targets it
    lacks are added from its stored scores (and the file rewritten)."""
    got = load_round(path)
    if got is None or got[0].get("support") != list(support):
        return False
    res, arrays = got
    if complete_targets(res, arrays, targets, threshold_for):
        save_round(path, res, arrays)
    return True
