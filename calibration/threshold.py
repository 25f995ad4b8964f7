"""Thresholds from good images only (no defect examples).

Two situations, one module (the method and why it works: docs/enrollment.md):

* **Enrollment** (K good images): leave-one-out (LOO) scores of the support images
  (`loo_threshold`). Too few to read a 99 % quantile off, so the threshold is a
  predictive quantile of a log-normal tail whose spread is shrunk toward, and whose
  LOO-vs-unseen bias is corrected by, a prior learned on *other* categories
  (calibration/tail_prior.py).
* **Line re-calibration** (tens to thousands of production good images):
  `threshold_from_good`: the empirical quantile when there are enough images for
  it, else the log-normal predictive quantile fitted on those images alone.

`threshold_for(calibration, target_fpr)` re-derives the threshold of a stored
calibration at another false-alarm target without touching the estimator.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np

from careg_edge.errors import UserInputError

from .tail_prior import TailPrior, predictive_scale

# Fewer good images than this give no usable tail fit (the spread estimate of 20
# log-scores is within ~±30 % of the truth with 90 % probability).
MIN_GOOD = 20
# The empirical (1 - a) quantile is used once n * a >= this many expected exceedances.
EMPIRICAL_EXCEEDANCES = 5
# Robust rejection for presumed-good frames: beyond median + this many robust sigmas
# (1.4826 * MAD) in log-score space; never more than MAX_REJECT of the frames.
REJECT_SIGMAS = 4.0
MAX_REJECT = 0.2


class NotEnoughGood(UserInputError):
    """Too few good images for the requested false-alarm rate."""


def check_target(target_fpr: float) -> float:
    if not 0 < float(target_fpr) < 0.5:
        raise UserInputError(f"target false-alarm rate: must be in (0, 0.5), got {target_fpr}")
    return float(target_fpr)


def t_quantile(p: float, dof: float) -> float:
    """Student-t quantile: bisection on the exact CDF (regularised incomplete beta);
    dof = inf gives the normal quantile. Kept here so scoring needs no SciPy."""
    if not math.isfinite(dof):
        return normal_quantile(p)
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < p:
        lo, hi = hi, hi * 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, dof) < p else (lo, mid)
    return 0.5 * (lo + hi)


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) = 1 - I_x(dof/2, 1/2) / 2 for t >= 0, with x = dof / (dof + t^2)."""
    tail = 0.5 * _betainc(dof / 2, 0.5, dof / (dof + t * t))
    return 1 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b): its continued fraction (modified Lentz),
    on the side of x where it converges fast."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(a * math.log(x) + b * math.log1p(-x)
                     + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + num / (c if abs(c) > tiny else tiny)
        f *= c * d
        if abs(1 - c * d) < 1e-14:
            break
    return front * (f - 1)


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
         3.754408661907416e+00)
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo = 0.02425
    if p < lo or p > 1 - lo:
        q = math.sqrt(-2 * math.log(p if p < lo else 1 - p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        return x if p < lo else -x
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def _logs(scores: Sequence[float], what: str) -> np.ndarray:
    s = np.asarray(scores, np.float64).ravel()
    bad = ~np.isfinite(s) | (s <= 0)
    if bad.any():
        raise UserInputError(f"{what}: {int(bad.sum())} score(s) are not finite and positive; "
                             "a corrupt image or encoder output cannot set a threshold")
    return np.log(s)


def robust_keep(scores: Sequence[float]) -> np.ndarray:
    """Mask of presumed-good scores to keep: drop those beyond median + 4 robust sigmas
    in log space (a few defective frames among good ones), at most 20 % of them."""
    x = _logs(scores, "presumed-good scores")
    med = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - med)))
    keep = x <= med + REJECT_SIGMAS * max(mad, 1e-6)
    cap = int(MAX_REJECT * x.size)
    if (~keep).sum() > cap:  # too many "outliers": not a few defects, keep the lowest 80 %
        keep = np.zeros(x.size, bool)
        keep[np.argsort(x)[:x.size - cap]] = True
    return keep


def needed_images(target_fpr: float) -> int:
    """Good images needed for a threshold at this rate (the tail fit's minimum)."""
    check_target(target_fpr)
    return MIN_GOOD


def threshold_from_good(scores: Sequence[float], target_fpr: float, robust: bool = False,
                        what: str = "good images") -> Dict:
    """Threshold at `target_fpr` from image scores of good images (line re-calibration).

    n * target_fpr >= 5: the empirical quantile (next observed score at or above it);
    else, with n >= MIN_GOOD: the larger of the log-normal predictive quantile
    (Student-t, n - 1 degrees of freedom) and the largest observed score."""
    a = check_target(target_fpr)
    raw = np.asarray(scores, np.float64).ravel()
    keep = robust_keep(raw) if robust else np.ones(raw.size, bool)
    s = raw[keep]
    if s.size < MIN_GOOD:
        raise NotEnoughGood(f"{what}: {s.size} usable good image scores"
                            f"{f' ({int((~keep).sum())} rejected as outliers)' if robust else ''}; "
                            f"a threshold at {a:.1%} false alarms needs at least {MIN_GOOD} "
                            f"(the empirical quantile needs {math.ceil(EMPIRICAL_EXCEEDANCES / a)})")
    x = _logs(s, what)
    if s.size * a >= EMPIRICAL_EXCEEDANCES:
        thr, method = float(np.quantile(s, 1.0 - a, method="higher")), "empirical"
    else:
        m, sd, n = float(x.mean()), float(x.std(ddof=1)), s.size
        thr = max(math.exp(m + t_quantile(1 - a, n - 1) * sd * math.sqrt(1 + 1 / n)),
                  float(s.max()))
        method = "lognormal-tail"
    return {"threshold": thr, "method": method, "target_fpr": a, "n_good": int(raw.size),
            "n_used": int(s.size), "n_rejected": int((~keep).sum()),
            "rejected_scores": [round(float(v), 6) for v in raw[~keep]],
            "good_fpr": float((s > thr).mean()),
            "good_scores": [round(float(v), 6) for v in raw]}


def loo_threshold(loo_scores: Sequence[float], k: int, target_fpr: float, prior=None) -> Dict:
    """Enrollment threshold from the leave-one-out scores of a K-image support set.

    log thr = m + b_K + q_K(a) * sigma_hat * sqrt(1 + 1/n), with m the mean LOO
    log-score, sigma_hat^2 = (nu0 sigma0_K^2 + (n-1) s^2) / (nu0 + n - 1) (K = 1: the
    held-out units are views of one image, their spread says nothing: sigma_hat =
    sigma0), and (b_K, sigma0_K, nu0, q_K(a)) from the prior (tail_prior.TailPrior)."""
    a = check_target(target_fpr)
    x = _logs(loo_scores, "leave-one-out scores")
    p = _prior_params(prior, k, a)
    # Without a prior every held-out unit counts, views of one image included: the
    # plain predictive quantile of what was measured, never below its maximum.
    own = prior is None
    n, s2, scale = predictive_scale(x, k, p["nu0"], p["sigma0"], own)
    q = p["q"] if p.get("q") is not None else t_quantile(1 - a, max(p["nu0"] + n - 1, 1.0))
    log_thr = float(x.mean()) + p["bias"] + q * scale
    if own:
        log_thr = max(log_thr, float(x.max()))
    model = {"method": "loo-tail", "k": int(k), "n": int(n), "mean_log": float(x.mean()),
             "var_log": s2, "prior": p.get("source", "none")}
    return {"threshold": math.exp(log_thr), "target_fpr": a, "model": model,
            "prior_params": {kk: v for kk, v in p.items() if kk != "source"},
            "loo_fpr": float((x > log_thr).mean())}


def _prior_params(prior, k: int, a: float) -> Dict:
    if prior is None:  # no prior: plain predictive quantile of the LOO scores themselves
        return {"bias": 0.0, "sigma0": 0.0, "nu0": 0.0, "q": None, "source": "none"}
    return prior.params(k, a)


def threshold_for(calibration: Dict, target_fpr: float, prior=None) -> float:
    """The threshold a stored calibration (profile.info["calibration"]) gives at another
    false-alarm target. `prior`: the TailPrior used at enrollment (loaded from the
    stored source when None)."""
    model = calibration.get("model") or {}
    if model.get("method") == "loo-tail":
        if prior is None and model.get("prior", "none") != "none":
            prior = TailPrior.from_source(model["prior"])
        x = np.log(np.asarray(calibration["loo_scores"], np.float64))
        return loo_threshold(np.exp(x), model["k"], target_fpr, prior)["threshold"]
    scores = calibration.get("good_scores")
    if not scores:
        raise UserInputError("this profile's calibration stores no scores to re-derive a "
                             "threshold from; re-enroll or run `careg-edge calibrate`")
    return threshold_from_good(scores, target_fpr)["threshold"]


def synthetic_detection(synth_scores: Optional[Sequence[float]], threshold: float):
    """Fraction of synthetic defects above the threshold: a guide, not a recall."""
    if synth_scores is None or len(synth_scores) == 0:
        return None
    return float((np.asarray(synth_scores) > threshold).mean())
