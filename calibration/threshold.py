"""Threshold from good images only (no defect examples).

Negatives: leave-one-out. The support is split into units (the K support images
when K >= 2; the augmented views of the single image when K = 1). For each of up
to `max_units` units the estimator is re-fitted without it (all its views) and
the unit is scored: with K >= 2 only the held-out image itself, as inspection
never augments (its flipped/rotated views would set the threshold above real
defects); with K = 1 the held-out augmented view. Each score is what a good
image the estimator has not seen gets.

Positives: synthetic defects (careg_edge.synth) pasted on the held-out unit's
source image, scored with the same leave-one-out state.

threshold = the (1 - target_fpr) quantile of the negative scores, taken as the
next observed score at or above it (method "higher"), so at most target_fpr of
the held-out good views lie above it; with fewer than 1/target_fpr negatives
this is their maximum. The expected detection rate is the fraction of synthetic
defects scoring above the threshold: an optimistic-or-pessimistic guide, not a
measured recall (real defects differ from pasted rectangles).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np


def pick_units(units: np.ndarray, max_units: int, seed: int) -> List[int]:
    """Up to `max_units` distinct unit ids, chosen with a seeded shuffle."""
    ids = np.unique(units)
    if len(ids) > max_units:
        ids = np.sort(np.random.default_rng(seed).choice(ids, max_units, replace=False))
    return [int(i) for i in ids]


def threshold_at_fpr(good: np.ndarray, target_fpr: float) -> float:
    return float(np.quantile(np.asarray(good, np.float64), 1.0 - target_fpr, method="higher"))


def calibrate(held_out: Sequence[int], score_good: Callable[[int], np.ndarray],
              score_synth: Callable[[int], np.ndarray], target_fpr: float = 0.01) -> Dict:
    """score_good(u) / score_synth(u): image scores of unit u's good views / synthetic
    defects with unit u left out of the fit. Returns threshold + statistics."""
    good = np.concatenate([np.asarray(score_good(u), np.float64) for u in held_out])
    synth = np.concatenate([np.asarray(score_synth(u), np.float64) for u in held_out])
    thr = threshold_at_fpr(good, target_fpr)
    return {"threshold": thr, "target_fpr": target_fpr, "held_out_units": list(held_out),
            "n_good": int(good.size), "n_synthetic": int(synth.size),
            "good_mean": float(good.mean()), "good_std": float(good.std()),
            "good_max": float(good.max()),
            "synthetic_mean": float(synth.mean()) if synth.size else None,
            "loo_fpr": float((good > thr).mean()),
            "expected_detection_rate": float((synth > thr).mean()) if synth.size else None,
            "good_scores": [round(float(s), 6) for s in good],
            "synthetic_scores": [round(float(s), 6) for s in synth]}
