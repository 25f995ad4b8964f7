"""Line metrics of one evaluation round: how the profile's pass/fail behaves on parts
it has never seen, at several false-alarm targets from one enrollment.

For each target t the threshold is re-derived from the profile's stored calibration
(`careg_edge.calibration.threshold.threshold_for`), so one enrollment serves every
target. Per target:
* fpr            fraction of the round's unseen good images scoring above the threshold
* detection      fraction of the defective test images scoring above it
* roc_detection  the ROC's detection rate at FPR = t (unseen goods vs defects, the
                 largest TPR among ROC points with FPR <= t): the best a threshold
                 could do at the target, known only in hindsight
* gap_points     100 * (roc_detection - detection): what the calibration costs
* fpr_ratio      fpr / t (1 = on target)

The re-calibration arm (`recalibration`) is what a user gets after
`careg-edge calibrate --good` with N production images: per round, N of the unseen
good images (a seeded draw) set the threshold at each target through
`threshold_from_good`, and the same figures are measured on the remaining unseen
goods only, so no image both sets and judges the threshold.

`verdict` checks a summary row against the line targets stated in docs/evaluation.md.
"""
from __future__ import annotations

import math
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import metrics
from ..errors import UserInputError

DEFAULT_TARGETS = (0.01, 0.05)
# Targets from the issue: mean over >= MIN_ROUNDS rounds; FPR <= 2x target at K >= 2,
# <= 4x at K = 1; at targets >= FLOOR_FROM (5 %) and K >= 2 also >= target / 4 (a
# threshold at infinity is not calibration); detection within GAP_POINTS of the ROC's.
MIN_ROUNDS = 3
FLOOR_FROM = 0.05
GAP_POINTS = 10.0
DEFAULT_RECALIBRATE = 100
# last entry of the draw's seed: keeps its stream apart from the support draw's, which
# uses the same (seed, category, K, round)
_RECAL_STREAM = 1


def default_threshold_for(calibration: dict, target_fpr: float) -> float:
    # imported when used: the calibration package must not be needed to import eval
    from ..calibration.threshold import threshold_for
    return threshold_for(calibration, target_fpr)


def thresholds_at(calibration: Optional[dict], targets: Sequence[float],
                  threshold_for: Callable) -> Dict[float, Tuple[float, Optional[str]]]:
    """{target: (threshold, error message or None)}; a target the calibration cannot
    serve gives (NaN, the message) instead of stopping the evaluation."""
    out = {}
    for t in targets:
        try:
            if calibration is None:
                raise ValueError("the profile stores no calibration")
            thr = float(threshold_for(calibration, t))
            if math.isnan(thr):
                raise ValueError("threshold_for returned NaN")
            out[t] = (thr, None)
        except Exception as e:  # a black box: record what it said, keep evaluating
            out[t] = (float("nan"), f"{type(e).__name__}: {e}")
    return out


def line_metrics(unseen_good: np.ndarray, defects: np.ndarray,
                 thresholds: Dict[float, Tuple[float, Optional[str]]]) -> List[dict]:
    """One entry per target (ascending), fields as in the module docstring."""
    rows = []
    for t in sorted(thresholds):
        thr, err = thresholds[t]
        fpr, det = metrics.rates_split(defects, unseen_good, thr)
        roc = metrics.detection_at_fpr(defects, unseen_good, t)
        rows.append({"target_fpr": t, "threshold": thr, "fpr": fpr,
                     "n_false_alarms": int(np.count_nonzero(unseen_good > thr)) if err is None else None,
                     "fpr_ratio": fpr / t, "detection": det, "roc_detection": roc,
                     "gap_points": 100.0 * (roc - det), "error": err})
    return rows


def own_threshold_metrics(unseen_good: np.ndarray, defects: np.ndarray, threshold: float,
                          target: Optional[float]) -> dict:
    """The same figures at the threshold stored in the profile (its own target)."""
    fpr, det = metrics.rates_split(defects, unseen_good, threshold)
    out = {"target_fpr": target, "threshold": threshold, "fpr": fpr, "detection": det}
    if target:
        roc = metrics.detection_at_fpr(defects, unseen_good, target)
        out.update(fpr_ratio=fpr / target, roc_detection=roc, gap_points=100.0 * (roc - det))
    return out


def verdict(k: int, target: float, fpr: float, gap_points: float, n_rounds: int) -> dict:
    """Pass/fail of one summary row (means over rounds) against the issue's targets."""
    upper = (2.0 if k >= 2 else 4.0) * target
    floor = target / 4 if (k >= 2 and target >= FLOOR_FROM - 1e-12) else None
    if not (np.isfinite(fpr) and np.isfinite(gap_points)):
        return {"verdict": "n/a", "fpr_max": upper, "fpr_min": floor, "problems": ["no value"]}
    problems = []
    if fpr > upper:
        problems.append(f"FPR {fpr / target:.1f}x > {upper / target:.0f}x target")
    if floor is not None and fpr < floor:
        problems.append(f"FPR {fpr / target:.2f}x < 1/4 target")
    if gap_points > GAP_POINTS:
        problems.append(f"gap {gap_points:.1f} > {GAP_POINTS:.0f} pts")
    text = "pass" if not problems else "FAIL: " + "; ".join(problems)
    if n_rounds < MIN_ROUNDS:
        text += f" (only {n_rounds} round{'s' if n_rounds != 1 else ''}; targets need >= {MIN_ROUNDS})"
    return {"verdict": text, "pass": not problems, "fpr_max": upper, "fpr_min": floor,
            "problems": problems}


def default_threshold_from_good(scores, target_fpr: float) -> dict:
    # as `careg-edge calibrate --good` calls it (not robust: the images are known good)
    from ..calibration.threshold import threshold_from_good
    return threshold_from_good(scores, target_fpr)


def recalibration_draw(n_unseen: int, n: int, seed: int, category: str, k: int,
                       rnd: int) -> np.ndarray:
    """Sorted indices (into the round's unseen good images) of the N re-calibration
    images, a pure function of (seed, category, K, round); every method of a round
    gets the same draw, so methods compare on the same images."""
    rng = np.random.default_rng([seed, zlib.crc32(category.encode()), k, rnd, _RECAL_STREAM])
    return np.sort(rng.choice(n_unseen, size=n, replace=False))


def recalibration(unseen_good: np.ndarray, defects: np.ndarray, targets: Sequence[float],
                  n: int, seed: int, category: str, k: int, rnd: int,
                  threshold_from_good: Callable = default_threshold_from_good) -> dict:
    """The re-calibration arm of one round: {"n", "calibration_idx", "n_measured",
    "rows"}; rows as `line_metrics` (fpr, detection and the ROC on the remaining unseen
    goods) plus "method" (empirical / lognormal-tail). When N cannot be drawn (more than
    the unseen goods, or none left to measure on) or `threshold_from_good` refuses
    (NotEnoughGood), the rows hold NaN and the message."""
    unseen_good = np.asarray(unseen_good, np.float64)
    if n >= unseen_good.size:
        err = (f"--recalibrate {n}: the round has {unseen_good.size} unseen good images; "
               "re-calibration needs more, so that some remain to measure on")
        return {"n": n, "calibration_idx": [], "n_measured": 0,
                "rows": [_nan_row(t, err) for t in sorted(targets)]}
    idx = recalibration_draw(unseen_good.size, n, seed, category, k, rnd)
    calib = np.zeros(unseen_good.size, bool)
    calib[idx] = True
    rest = unseen_good[~calib]
    rows = []
    for t in sorted(targets):
        try:
            fit = threshold_from_good(unseen_good[idx], t)
        except UserInputError as e:  # NotEnoughGood, non-positive scores: data, not a bug
            rows.append(_nan_row(t, f"{type(e).__name__}: {e}", rest, defects))
            continue
        row = line_metrics(rest, defects, {t: (float(fit["threshold"]), None)})[0]
        row["method"] = fit["method"]
        rows.append(row)
    return {"n": n, "calibration_idx": idx.tolist(), "n_measured": int(rest.size), "rows": rows}


def _nan_row(t: float, err: str, good: Optional[np.ndarray] = None,
             defects: Optional[np.ndarray] = None) -> dict:
    # the ROC needs no threshold: kept when there are goods left to draw it from
    roc = metrics.detection_at_fpr(defects, good, t) if good is not None and good.size else float("nan")
    return {"target_fpr": t, "threshold": float("nan"), "fpr": float("nan"), "n_false_alarms": None,
            "fpr_ratio": float("nan"), "detection": float("nan"), "roc_detection": roc,
            "gap_points": float("nan"), "method": None, "error": err}
