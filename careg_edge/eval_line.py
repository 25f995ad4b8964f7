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

`verdict` checks a summary row against the targets of issue 15 (see docs/evaluation.md).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import metrics

DEFAULT_TARGETS = (0.01, 0.05)
# Targets from the issue: mean over >= MIN_ROUNDS rounds; FPR <= 2x target at K >= 2,
# <= 4x at K = 1; at targets >= FLOOR_FROM (5 %) and K >= 2 also >= target / 4 (a
# threshold at infinity is not calibration); detection within GAP_POINTS of the ROC's.
MIN_ROUNDS = 3
FLOOR_FROM = 0.05
GAP_POINTS = 10.0


def default_threshold_for(calibration: dict, target_fpr: float) -> float:
    # imported when used: the calibration package must not be needed to import eval
    from .calibration.threshold import threshold_for
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
