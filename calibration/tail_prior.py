"""The cross-category prior of the enrollment threshold (calibration/threshold.py).

K good images cannot show how far above them the scores of unseen good parts
reach. Other categories can: for each of them, support sets of K images were
drawn, enrolled exactly as `Inspector.enroll` does, and then *every* other good
image of the category was scored. From those records, per K:

  bias   b_K     mean over categories of  mean(log unseen) - mean(log LOO)
  spread sigma0  sqrt(mean over categories of var(log unseen))
  q_K(a)         the multiplier that makes the mean false-alarm rate over
                 categories equal to a, with b_K and sigma0 in place

A category named in `exclude` contributes nothing: `careg-edge eval` excludes
the category it evaluates, so its test data never shapes its own threshold.

Records live in a `careg_edge.container` file (kind careg-tail-prior) made by
`bench/collect_tail_prior.py`; each record holds the LOO log-scores of one
enrollment and the log-scores of that category's unseen good images.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from careg_edge.container import read_container, write_container

KIND, VERSION = "careg-tail-prior", 1
DEFAULT_PATH = Path(__file__).with_name("tail_prior.careg")
NU0 = 4.0          # prior strength of sigma0, in pseudo-observations
REAL_WEIGHT = 1.0  # weight of a real category against a synthetic one in every mean
SHOTS = (1, 2, 4, 8)


def _fallback(estimator: str) -> str:
    """The estimator whose records stand in for this one's (its class's
    `tail_prior_fallback`; itself when it names none or is not registered)."""
    from careg_edge.estimators.registry import NAMES, estimator_class
    if estimator not in NAMES:
        return estimator
    return estimator_class(estimator).tail_prior_fallback or estimator


class TailPrior:
    def __init__(self, records: List[dict], loo: List[np.ndarray], unseen: List[np.ndarray],
                 exclude: Sequence[str] = (), source: str = ""):
        ex = set(exclude)
        keep = [i for i, r in enumerate(records) if r["category"] not in ex]
        self.records = [records[i] for i in keep]
        self.loo = [loo[i] for i in keep]
        self.unseen = [unseen[i] for i in keep]
        self.exclude = tuple(sorted(ex))
        self.source = source
        self._cache: Dict[Tuple[int, float], dict] = {}

    # ---- reading / writing -------------------------------------------------------
    @classmethod
    def load(cls, path=DEFAULT_PATH, exclude: Sequence[str] = (), setting: Optional[dict] = None):
        tensors, meta = read_container(path, KIND, VERSION)
        recs = json.loads(meta["records"])
        loo, unseen = _split(tensors["loo"], tensors["loo_rec"], len(recs)), \
            _split(tensors["unseen"], tensors["unseen_rec"], len(recs))
        if setting:
            keep = [i for i, r in enumerate(recs) if all(r.get(k) == v for k, v in setting.items())]
            recs, loo, unseen = [recs[i] for i in keep], [loo[i] for i in keep], [unseen[i] for i in keep]
        src = f"{Path(path).name}|{json.dumps(setting or {}, sort_keys=True)}|{','.join(sorted(exclude))}"
        return cls(recs, loo, unseen, exclude, src)

    @classmethod
    def from_source(cls, source: str):
        """Re-open the prior a profile's calibration names (see `source`)."""
        name, setting, exclude = source.split("|")
        path = DEFAULT_PATH.with_name(name)
        return _load_cached(str(path), setting, exclude)

    @classmethod
    def default(cls, estimator: str, image_score: str, exclude: Sequence[str] = ()):
        """The shipped prior for this estimator and image-score rule; None when absent
        (the threshold then falls back to the LOO scores alone)."""
        if not DEFAULT_PATH.exists():
            return None
        # nothing recorded for this setting: the nearest one that is (the estimator's
        # class names a similar one; anything else falls back to the shipped default)
        for est, rule in ((estimator, image_score), (_fallback(estimator), image_score),
                          ("patchcore", "top20%")):
            setting = json.dumps({"estimator": est, "image_score": rule}, sort_keys=True)
            prior = _load_cached(str(DEFAULT_PATH), setting, ",".join(sorted(exclude)))
            if prior.records:
                return prior
        return None

    @staticmethod
    def save(path, records: List[dict], loo: List[np.ndarray], unseen: List[np.ndarray]) -> None:
        tensors = {"loo": np.concatenate(loo).astype(np.float32),
                   "loo_rec": np.repeat(np.arange(len(loo)), [len(x) for x in loo]).astype(np.int32),
                   "unseen": np.concatenate(unseen).astype(np.float32),
                   "unseen_rec": np.repeat(np.arange(len(unseen)),
                                           [len(x) for x in unseen]).astype(np.int32)}
        write_container(Path(path), tensors, {"records": json.dumps(records)}, KIND, VERSION)

    # ---- the fitted parameters ---------------------------------------------------
    def categories(self, k: int) -> List[str]:
        return sorted({r["category"] for r in self.records if r["k"] == self.nearest_k(k)})

    def nearest_k(self, k: int) -> int:
        have = sorted({r["k"] for r in self.records}) or list(SHOTS)
        return min(have, key=lambda s: (abs(math.log(s) - math.log(max(k, 1))), s))

    def params(self, k: int, a: float) -> dict:
        key = (self.nearest_k(k), round(float(a), 8))
        if key not in self._cache:
            self._cache[key] = self._fit(*key)
        return self._cache[key]

    def _fit(self, k: int, a: float) -> dict:
        idx = [i for i, r in enumerate(self.records) if r["k"] == k]
        by_cat: Dict[str, List[int]] = {}
        for i in idx:
            by_cat.setdefault(self.records[i]["category"], []).append(i)
        w = np.array([REAL_WEIGHT if self.records[ii[0]].get("kind") == "real" else 1.0
                      for ii in by_cat.values()])
        w = w / w.sum()
        bias = float(w @ [np.mean([self.unseen[i].mean() - self.loo[i].mean() for i in ii])
                          for ii in by_cat.values()])
        sigma0 = math.sqrt(float(w @ [np.mean([self.unseen[i].var() for i in ii])
                                      for ii in by_cat.values()]))
        prep = self._prepare(by_cat, k, bias, sigma0)
        q = _solve_q(prep, w, a)
        return {"bias": bias, "sigma0": sigma0, "nu0": NU0, "q": q, "k_prior": k,
                "categories": sorted(by_cat), "source": self.source,
                "fpr_spread": _fpr_spread(prep, q)}

    def _prepare(self, by_cat, k, bias, sigma0):
        """Per category, per record: (level, scale, unseen log-scores) of its threshold."""
        prep = []
        for ii in by_cat.values():
            rows = []
            for i in ii:
                scale = predictive_scale(self.loo[i], k, NU0, sigma0)[2]
                rows.append((float(self.loo[i].mean()) + bias, scale, self.unseen[i]))
            prep.append(rows)
        return prep


def _solve_q(prep, w, a) -> float:
    """Bisection on q: the (weighted) mean over categories of the mean per-round
    false-alarm rate equals a."""
    def fpr(q):
        return float(w @ [np.mean([(u > m + q * s).mean() for m, s, u in rows])
                          for rows in prep])
    lo, hi = -5.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fpr(mid) > a else (lo, mid)
    return hi


def _fpr_spread(prep, q) -> Dict[str, float]:
    """How single enrollments of other categories landed: the median, 90th percentile
    and largest of their false-alarm rates at the fitted q. The mean matches the target,
    but it is made of many conservative enrollments and a few bad ones; one line's luck
    is what `enroll` reports beside it."""
    rates = np.array([(u > m + q * s).mean() for rows in prep for m, s, u in rows])
    p50, p90 = np.percentile(rates, [50, 90])
    return {"p50": float(p50), "p90": float(p90), "max": float(rates.max()), "n": int(rates.size)}


def predictive_scale(x: np.ndarray, k: int, nu0: float, sigma0: float, own: bool = False):
    """(n, s^2, sigma_hat * sqrt(1 + 1/n)) of LOO log-scores x: the spread the tail
    quantile multiplies. K = 1 counts one observation with no spread of its own (its
    units are views of one image) unless `own` (no prior: the views are all there is).
    The threshold (threshold.loo_threshold) and the prior's fit both use it."""
    mine = k >= 2 or own
    n = x.size if mine else 1
    s2 = float(x.var(ddof=1)) if (mine and x.size >= 2) else 0.0
    sig = math.sqrt((nu0 * sigma0 ** 2 + (n - 1) * s2) / max(nu0 + n - 1, 1e-9))
    return n, s2, sig * math.sqrt(1 + 1 / n)


def _split(values: np.ndarray, rec: np.ndarray, n: int) -> List[np.ndarray]:
    order = np.argsort(rec, kind="stable")
    values, rec = values[order].astype(np.float64), rec[order]
    bounds = np.searchsorted(rec, np.arange(n + 1))
    return [values[bounds[i]:bounds[i + 1]] for i in range(n)]


@lru_cache(maxsize=16)
def _load_cached(path: str, setting: str, exclude: str) -> TailPrior:
    ex = tuple(e for e in exclude.split(",") if e)
    return TailPrior.load(path, ex, json.loads(setting) or None)
