"""Detection and localisation metrics, NumPy only.

Conventions (the ones the MVTec AD / RegAD papers report):
* AUROC is the area under the ROC curve with ties counted half (the trapezoidal
  area scikit-learn computes), evaluated as the Mann-Whitney statistic: sort the
  normal scores once and count, for each anomalous score, how many normal scores
  lie below / equal. No argsort over all pixels, so pixel AUROC over tens of
  millions of pixels costs one float32 sort and little extra memory.
* PRO: the MVTec AD definition. Each connected ground-truth region (8-connected)
  of each image counts equally; at a threshold t its overlap is the fraction of its
  pixels scoring >= t; PRO(t) is the mean overlap over all regions and FPR(t) the
  fraction of normal pixels (over every test image) scoring >= t. AUPRO is the area
  under PRO(FPR) from 0 to `max_fpr` (linearly interpolated at `max_fpr`), divided
  by `max_fpr`. Only pixels that can matter for FPR <= max_fpr enter the sort.
* F1-max: best F1 over every threshold "score >= t" of the image scores.
* Detection at a false-positive rate (`detection_at_fpr`): the largest TPR among the
  ROC's points whose FPR does not exceed the rate (no interpolation between points,
  which would promise an operating point no threshold gives).
Scores are used as they are: nothing is min-max normalised over the test set.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ..errors import UserInputError


def _labels_scores(labels, scores, what: str):
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise UserInputError(f"{what}: {y.size} labels but {s.size} scores")
    if not np.isfinite(s).all():
        raise UserInputError(f"{what}: scores contain NaN or Inf")
    return y, s


def auroc_split(pos: np.ndarray, neg: np.ndarray, neg_sorted: bool = False) -> float:
    """AUROC from the anomalous (`pos`) and normal (`neg`) scores, ties count half."""
    pos = np.asarray(pos).ravel()
    neg = np.asarray(neg).ravel() if neg_sorted else np.sort(np.asarray(neg).ravel())
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    below = np.searchsorted(neg, pos, side="left").astype(np.int64)
    upto = np.searchsorted(neg, pos, side="right").astype(np.int64)
    # below + (equal)/2 summed exactly in integers (x2) before one division
    twice = int(below.sum()) * 2 + int((upto - below).sum())
    return twice / (2.0 * pos.size * neg.size)


def auroc(labels, scores) -> float:
    """Image-level AUROC (labels: 1 = anomalous). NaN when one class is missing."""
    y, s = _labels_scores(labels, scores, "auroc")
    return auroc_split(s[y], s[~y])


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    """Pixel AUROC over a list of (H_i, W_i) ground-truth masks and anomaly maps."""
    pos, neg = _split_pixels(masks, maps)
    return auroc_split(pos, neg)


def _split_pixels(masks, maps) -> Tuple[np.ndarray, np.ndarray]:
    _check_pairs(masks, maps)
    pos = np.concatenate([np.asarray(a, np.float32)[np.asarray(m, bool)] for m, a in zip(masks, maps)])
    neg = np.concatenate([np.asarray(a, np.float32)[~np.asarray(m, bool)] for m, a in zip(masks, maps)])
    return pos, neg


def _check_pairs(masks, maps) -> None:
    if len(masks) != len(maps):
        raise UserInputError(f"pixel metrics: {len(masks)} masks but {len(maps)} anomaly maps")
    for i, (m, a) in enumerate(zip(masks, maps)):
        if np.shape(m) != np.shape(a):
            raise UserInputError(f"pixel metrics: image {i}: mask {np.shape(m)} and anomaly map "
                                 f"{np.shape(a)} differ in size; resize the map to the mask first")


def roc_curve(labels, scores, max_points: int = 2000) -> Tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at up to `max_points` thresholds (for plots, not for the AUROC value)."""
    y, s = _labels_scores(labels, scores, "roc_curve")
    return roc_curve_split(s[y], s[~y], max_points)


def roc_curve_split(pos, neg, max_points: int = 2000, neg_sorted: bool = False):
    """(fpr, tpr) at thresholds spread evenly over both classes' ranks; no full re-sort
    when `neg` is already sorted (pixel curves over tens of millions of values)."""
    pos = np.sort(np.ravel(pos))
    neg = np.ravel(neg) if neg_sorted else np.sort(np.ravel(neg))
    if pos.size + neg.size == 0:
        return np.zeros(1), np.zeros(1)
    picks = [a[np.linspace(0, a.size - 1, min(a.size, max_points // 2)).astype(np.int64)]
             for a in (pos, neg) if a.size]
    thr = np.concatenate([[np.inf], np.unique(np.concatenate(picks))[::-1]])
    tpr = (pos.size - np.searchsorted(pos, thr, "left")) / max(pos.size, 1)
    fpr = (neg.size - np.searchsorted(neg, thr, "left")) / max(neg.size, 1)
    return np.concatenate([fpr, [1.0]]), np.concatenate([tpr, [1.0]])


def pixel_auroc_and_curve(masks, maps, max_points: int = 2000):
    """(pixel AUROC, (fpr, tpr)) with one sort of the normal pixels."""
    pos, neg = _split_pixels(masks, maps)
    neg.sort()
    return auroc_split(pos, neg, neg_sorted=True), roc_curve_split(pos, neg, max_points, True)


def f1_max(labels, scores) -> Tuple[float, float]:
    """(best F1, its threshold) over every rule `score >= t`."""
    y, s = _labels_scores(labels, scores, "f1_max")
    if not y.any():
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    pred = np.arange(1, s.size + 1)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # last index of each tied group
    tp, pred, thr = tp[last], pred[last], s_sorted[last]
    f1 = 2.0 * tp / (pred + y.sum())
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def rates_at_threshold(labels, scores, threshold: float) -> Tuple[float, float]:
    """(false-positive rate on good images, detection rate on defective images)
    for the rule the SDK uses: defect when score > threshold."""
    y, s = _labels_scores(labels, scores, "rates_at_threshold")
    flagged = s > threshold
    fpr = float(flagged[~y].mean()) if (~y).any() else float("nan")
    det = float(flagged[y].mean()) if y.any() else float("nan")
    return fpr, det


def detection_at_fpr(pos, neg, max_fpr: float) -> float:
    """The ROC's detection rate at false-positive rate `max_fpr`, read conservatively off
    the step function: the largest TPR among the ROC's points with FPR <= max_fpr.

    A threshold lets through at most a = floor(max_fpr * n_neg) normal scores only if it
    lies above the (a+1)-th largest normal score (tied normal scores cannot be split), so
    the answer is the fraction of anomalous scores strictly above that score."""
    pos, neg = np.ravel(pos), np.sort(np.ravel(neg))
    if pos.size == 0 or neg.size == 0 or not np.isfinite(max_fpr):
        return float("nan")
    # the tiny slack keeps max_fpr * n that is an integer in exact arithmetic (0.01 * 300)
    # from rounding down to the integer below
    allowed = int(np.floor(max_fpr * neg.size * (1 + 1e-9)))
    if allowed >= neg.size:
        return 1.0
    return float(np.count_nonzero(pos > neg[neg.size - 1 - allowed]) / pos.size)


def rates_split(pos, neg, threshold: float) -> Tuple[float, float]:
    """(false-positive rate on `neg`, detection rate on `pos`) for the rule the SDK uses,
    defect when score > threshold; NaN for an empty side or a NaN threshold."""
    pos, neg = np.ravel(pos), np.ravel(neg)
    if np.isnan(threshold):
        return float("nan"), float("nan")
    fpr = float(np.count_nonzero(neg > threshold) / neg.size) if neg.size else float("nan")
    det = float(np.count_nonzero(pos > threshold) / pos.size) if pos.size else float("nan")
    return fpr, det


def label_regions(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """8-connected components of a binary mask, as MVTec's evaluation code uses."""
    from scipy import ndimage
    return ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), int))


def pro_curve(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray],
              max_fpr: float = 0.3) -> Tuple[np.ndarray, np.ndarray]:
    """Exact (fpr, pro) step points, descending threshold, from (0, 0) up to the
    first point with fpr >= max_fpr. Empty-mask images contribute only normal pixels."""
    _check_pairs(masks, maps)
    pos_s, pos_w, neg = [], [], []
    n_regions = 0
    for m, a in zip(masks, maps):
        a = np.asarray(a, np.float32)
        lab, n = label_regions(m)
        neg.append(a[lab == 0])
        if n:
            sizes = np.bincount(lab.ravel())
            inside = lab > 0
            pos_s.append(a[inside])
            pos_w.append(1.0 / sizes[lab[inside]])
            n_regions += n
    neg = np.concatenate(neg)
    if n_regions == 0 or neg.size == 0:
        return np.array([0.0]), np.array([0.0])
    pos_s, pos_w = np.concatenate(pos_s), np.concatenate(pos_w) / n_regions
    # Only thresholds down to the one where FPR first reaches max_fpr matter.
    n_keep = min(neg.size, int(np.ceil(max_fpr * neg.size)))
    cut = np.partition(neg, neg.size - n_keep)[neg.size - n_keep]
    neg = neg[neg >= cut]
    keep = pos_s >= cut
    pos_s, pos_w = pos_s[keep], pos_w[keep]
    n_neg_total = sum(int(np.count_nonzero(~np.asarray(m, bool))) for m in masks)
    scores = np.concatenate([pos_s, neg])
    d_pro = np.concatenate([pos_w, np.zeros(neg.size)])
    d_fpr = np.concatenate([np.zeros(pos_s.size), np.full(neg.size, 1.0 / n_neg_total)])
    order = np.argsort(-scores, kind="stable")
    scores, d_pro, d_fpr = scores[order], d_pro[order], d_fpr[order]
    last = np.r_[scores[1:] != scores[:-1], True]
    fpr = np.minimum(np.cumsum(d_fpr)[last], 1.0)
    pro = np.minimum(np.cumsum(d_pro)[last], 1.0)
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) for x in [0, x_max]; x ascending; y interpolated at x_max."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max and (~inside).any():
        j = int(np.argmax(~inside))  # first point beyond x_max
        x0, y0, x1, y1 = x[j - 1], y[j - 1], x[j], y[j]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_at]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_fpr: float = 0.3) -> float:
    """Normalised area under the PRO curve up to `max_fpr` (1.0 = perfect)."""
    if not 0.0 < max_fpr <= 1.0:
        raise UserInputError(f"aupro: max_fpr={max_fpr} must lie in (0, 1]")
    return aupro_from_curve(*pro_curve(masks, maps, max_fpr), max_fpr)


def aupro_from_curve(fpr: np.ndarray, pro: np.ndarray, max_fpr: float = 0.3) -> float:
    if fpr.size < 2:
        return float("nan")
    return area_up_to(fpr, pro, max_fpr) / max_fpr
