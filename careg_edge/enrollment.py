"""Enrollment: K good images -> Profile (estimator state + threshold).

    load + resize -> encode originals -> augment the support (only the support) and
    pick augmentations (selection.py) -> estimator fit -> leave-one-out scores ->
    threshold (calibration/threshold.py, docs/enrollment.md) -> Profile

`EnrollSettings` carries every option; `Enrollment` runs one enrollment with the
encoder and the compiled road of an Inspector (`_features`, `_image_scores`), so
what enrollment scores is scored exactly as inspection scores it. One Enrollment
per call: its progress callback is its own, so threads may enroll at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import augment as aug
from . import postprocess, preprocess, selection, synth
from .errors import UserInputError
from .estimators import make_estimator
from .features import FeatureSpec
from .profile import Profile

# K = 1: leave-one-out over augmented views of the one image; they are near copies of
# each other, so a few carry all there is to learn (the prior corrects their bias).
K1_UNITS = 6
# Held-out units that also get synthetic defects (the expected-detection guide).
SYNTH_UNITS = 4


@dataclass(frozen=True)
class EnrollSettings:
    estimator: str = "patchcore"
    augment: object = "auto"
    seed: int = 0
    select: str = "wasserstein"
    localisation: str = "unwarp"
    target_fpr: float = 0.01
    sigma: float = 4.0
    max_units: int = 0            # 0: every image (K >= 2), K1_UNITS views (K = 1)
    synth_per_unit: int = 4
    image_score: str = postprocess.DEFAULT_IMAGE_SCORE
    prior_exclude: Tuple[str, ...] = ()
    estimator_params: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if not 0 < self.target_fpr < 1:
            raise UserInputError(f"target_fpr: must be in (0, 1), got {self.target_fpr}")
        object.__setattr__(self, "image_score", postprocess.check_image_score(self.image_score))
        object.__setattr__(self, "prior_exclude", tuple(self.prior_exclude))


@dataclass
class SupportRows:
    """Every encoded row of the support set: the K originals, then each view op's K."""
    feats: np.ndarray     # [N, P, D]
    thetas: np.ndarray    # [N, 2, 3] theta_inv of stage 3
    source: np.ndarray    # support image of each row
    partner: np.ndarray   # the other image inside a row (mixup), else the source
    view_id: np.ndarray   # 0 = original

    @classmethod
    def build(cls, f0, th0, views, ops: Sequence[str]) -> "SupportRows":
        k = len(f0)
        partner = [np.arange(k)] + [[aug.partner(op, i, k) for i in range(k)] for op in ops]
        return cls(np.concatenate([f0] + [v[0] for v in views]),
                   np.concatenate([th0] + [v[1] for v in views]),
                   np.tile(np.arange(k), len(views) + 1), np.concatenate(partner),
                   np.repeat(np.arange(len(views) + 1), k))

    @property
    def units(self) -> np.ndarray:
        """Leave-one-out unit of each row: its image (K >= 2) or its view (K = 1)."""
        return self.source if self.source.max() > 0 else self.view_id

    def without(self, u: int) -> np.ndarray:
        """Rows that hold nothing of unit u (its own rows and mixup views blending it)."""
        if self.source.max() == 0:
            return self.view_id != u
        return (self.source != u) & (self.partner != u)

    def probe(self, u: int) -> np.ndarray:
        """Rows scored when unit u is held out: inspection never augments, so with K >= 2
        only the image itself (its flipped/rotated views would push the threshold above
        real defects); with K = 1 the held-out view."""
        return (self.units == u) & ((self.view_id == 0) | (self.source.max() == 0))


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _held_units(units: np.ndarray, max_units: int, seed: int) -> List[int]:
    """All unit ids, or `max_units` of them chosen by a seeded shuffle."""
    ids = np.unique(units)
    if 0 < max_units < len(ids):
        ids = np.sort(np.random.default_rng(seed).choice(ids, max_units, replace=False))
    return [int(i) for i in ids]


class Enrollment:
    def __init__(self, inspector, settings: EnrollSettings,
                 progress: Optional[Callable[[float, str], None]] = None):
        self.insp, self.s = inspector, settings
        self.progress = progress or (lambda frac, stage="": None)
        self.est = make_estimator(settings.estimator, **settings.estimator_params)
        meta = inspector.meta
        self.spec = FeatureSpec(meta.backbone, inspector.channels, tuple(meta.input_size),
                                self.est.grid_stride, settings.localisation, self.est.aggregate)
        self.transform = self.est.input_transform(self.spec.d_in, settings.seed)

    def run(self, images) -> Profile:
        s, times, t = self.s, {}, time.perf_counter()
        names = [preprocess.describe(im, i) for i, im in enumerate(
            [images] if isinstance(images, (str, Path, np.ndarray)) else list(images))]
        rgbs = [preprocess.resize(x, self.spec.input_size)
                for x in preprocess.load_all(images, "support images")]
        times["load"] = _ms(t)
        self.progress(0.05, "load")
        t = time.perf_counter()
        f0, th0 = self.insp._features(rgbs, self.spec, self.transform)
        times["encode_support"] = _ms(t)
        self.progress(0.15, "encode")
        t = time.perf_counter()
        views, record = self._augment(rgbs, f0)
        times["augment_select"] = _ms(t)
        rows = SupportRows.build(f0, th0, views, record["ops"])
        if len(np.unique(rows.units)) < 2:
            raise UserInputError("support images: one image and no augmentation leaves nothing "
                                 "to hold out for the threshold; give >= 2 images or augment")
        t = time.perf_counter()
        fitted = self.est.fit(rows.feats, self.spec.grid, rows.units, s.seed)
        times["fit"] = _ms(t)
        self.progress(0.7, "fit")
        t = time.perf_counter()
        calib = self._calibrate(rows, rgbs)
        times["calibrate"] = _ms(t)
        self.progress(1.0, "calibrate")
        return self._profile(fitted, calib, record, names, len(rgbs), len(rows.feats), times)

    def _profile(self, fitted, calib, record, names, k, n_views, times) -> Profile:
        s, meta = self.s, self.insp.meta
        info = {"encoder": meta.to_dict(), "features": self.spec.to_dict(),
                "localisation": s.localisation, "image_score": s.image_score,
                "estimator_params": self.est.params,
                "estimator_stats": fitted.stats, "augment": record, "calibration": calib,
                "normalisation": {"mean": list(meta.mean), "std": list(meta.std),
                                  "scale": meta.scale},
                "support": {"k": k, "images": names, "n_views": int(n_views)},
                "seed": s.seed, "timings_ms": {n: round(v, 1) for n, v in times.items()}}
        tensors = dict(fitted.tensors)
        tensors.update(self.transform)
        return Profile(self.est.name, tensors, calib["threshold"], self.spec.grid,
                       self.spec.input_size, s.sigma, meta.encoder_hash, info)

    # ---- support augmentation ---------------------------------------------------------
    def _view(self, images, i, n):
        """Features of one augmented view of the support set; progress 0.15 -> 0.6."""
        out = self.insp._features(images, self.spec, self.transform)
        self.progress(0.15 + 0.45 * (i + 1) / max(n, 1), "augment")
        return out

    def _augment(self, rgbs, f0):
        """-> ([(features, thetas) per op], record for the profile)."""
        augment, select = self.s.augment, self.s.select
        if augment != "auto":
            ops = aug.expand(augment)
            return ([self._view(aug.apply([op], rgbs), i, len(ops)) for i, op in enumerate(ops)],
                    {"request": augment if isinstance(augment, str) else list(augment),
                     "ops": ops})
        base = selection.pool(f0, self.spec.grid)
        dists, per_group = {}, {}
        n_ops = sum(len(ops) for ops in aug.CANDIDATES.values())
        for group, ops in aug.CANDIDATES.items():
            done = sum(len(v) for v in per_group.values())
            per_group[group] = [self._view(aug.apply([op], rgbs), done + i, n_ops)
                                for i, op in enumerate(ops)]
            fv = np.concatenate([v[0] for v in per_group[group]])
            dists[group] = selection.distance(base, selection.pool(fv, self.spec.grid), select)
        chosen = selection.choose(dists)
        ops = [op for g in chosen for op in aug.CANDIDATES[g]]
        return ([v for g in chosen for v in per_group[g]],
                {"request": "auto", "method": select, "distances": dists, "chosen": chosen,
                 "ops": ops, "rule": "keep groups with distance <= mean distance"})

    # ---- threshold ---------------------------------------------------------------------
    def _calibrate(self, rows: SupportRows, rgbs) -> dict:
        """Leave-one-out scores of every unit (the estimator re-fitted without it, PatchCore's
        coreset included), then the tail-model threshold (calibration/threshold.py)."""
        from .calibration.tail_prior import TailPrior
        from .calibration.threshold import loo_threshold, synthetic_detection
        s, k = self.s, len(rgbs)
        held = _held_units(rows.units, s.max_units or (0 if k >= 2 else K1_UNITS), s.seed)
        good, fake = [], []
        for n, u in enumerate(held):
            self.progress(0.7 + 0.3 * n / len(held), "calibrate")
            keep = rows.without(u)
            state = self.est.fit(rows.feats[keep], self.spec.grid, rows.units[keep], s.seed).tensors
            probe = rows.probe(u)
            good.append(self._scores(rows.feats[probe], rows.thetas[probe], state))
            if n < SYNTH_UNITS and s.synth_per_unit > 0:
                img = rgbs[int(rows.source[rows.units == u][0])]
                fake.append(self._synthetic_scores(img, state, (s.seed, u)))
        loo = np.concatenate(good).astype(np.float64)
        res = loo_threshold(loo, k, s.target_fpr,
                            TailPrior.default(self.est.name, s.image_score, s.prior_exclude))
        syn = np.concatenate(fake) if fake else np.zeros(0)
        res.update({"held_out_units": held, "loo_scores": [round(float(v), 6) for v in loo],
                    "prior_exclude": list(s.prior_exclude),
                    "synthetic_scores": [round(float(v), 6) for v in syn],
                    "expected_detection_rate": synthetic_detection(syn, res["threshold"])})
        return res

    def _scores(self, feats, thetas, state) -> np.ndarray:
        return self.insp._image_scores(feats, thetas, state, self.est, self.spec, self.s.sigma,
                                       self.s.image_score)

    def _synthetic_scores(self, img, state, seed) -> np.ndarray:
        """Synthetic defects pasted on a held-out image, scored against its LOO state: a
        guide to detection at the threshold, not a measured recall."""
        rng = np.random.default_rng(list(seed))
        fakes = [synth.paste_defects(img, rng)[0] for _ in range(self.s.synth_per_unit)]
        f, th = self.insp._features(fakes, self.spec, self.transform)
        return self._scores(f, th, state)
