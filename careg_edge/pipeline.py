"""The public API: `Inspector.enroll` (K good images -> Profile) and
`Inspector.inspect` / `inspect_batch` (image + Profile -> Result).

Enrollment:  load + resize -> encode originals -> augment the support (only the
support) and pick augmentations (selection.py) -> estimator fit -> threshold from
good images only (calibration/threshold.py) -> Profile.
Inspection:  preprocess -> encode -> one call of the compiled road (careg_edge.scoring:
features, distances, anomaly map, image score, verdict; the C API runs the same).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from . import augment as aug
from . import features, postprocess, preprocess, scoring, selection, synth
from .decision import Result, decide
from .errors import EncoderMismatch, UserInputError
from .estimators import make_estimator
from .features import FeatureSpec
from .profile import Profile
from .runtime.base import Runtime

__all__ = ["Inspector", "Result", "open_runtime"]
TRANSFORM_KEYS = scoring.TRANSFORM_KEYS
# K = 1: leave-one-out over augmented views of the one image; they are near copies of
# each other, so a few carry all there is to learn (the prior corrects their bias).
K1_UNITS = 6
# Held-out units that also get synthetic defects (the expected-detection guide).
SYNTH_UNITS = 4


def _held_units(units: np.ndarray, max_units: int, seed: int) -> List[int]:
    """All unit ids, or `max_units` of them chosen by a seeded shuffle."""
    ids = np.unique(units)
    if 0 < max_units < len(ids):
        ids = np.sort(np.random.default_rng(seed).choice(ids, max_units, replace=False))
    return [int(i) for i in ids]


def open_runtime(model=None, backend: str = "auto", threads: int = 0) -> Runtime:
    """A Runtime instance, a model path, "imagenet:<backbone>" or None (the bundled
    encoder, resolved by runtime.load_runtime)."""
    if isinstance(model, Runtime):
        return model
    from .runtime import load_runtime
    return load_runtime(model, backend, threads, verbose=False)


def single_thread_blas():
    """Batched small LAPACK calls (100x100 inverses, eigh) run far faster with one
    BLAS thread per process than with OpenBLAS threads fighting over busy cores
    (measured 0.7 s vs 5.6 s for 256 inverses on 2 loaded cores)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _no_progress(frac, stage=""):
    return None


class Inspector:
    def __init__(self, model=None, backend: str = "auto", threads: int = 0, batch_size: int = 8):
        self.runtime = open_runtime(model, backend, threads)
        self.meta = self.runtime.meta
        self.threads, self.batch_size = int(threads), max(1, int(batch_size))
        self._channels = None
        # the enrollment's progress callback is per thread: two threads may enroll on one
        # Inspector at once, and each must hear only its own progress
        self._local = threading.local()

    @property
    def _progress(self):
        return getattr(self._local, "progress", _no_progress)

    # ---- encoder -> features ----------------------------------------------------------
    @property
    def channels(self) -> Tuple[int, int, int]:
        if self._channels is None:
            c = tuple(int(x) for x in self.meta.channels)
            if 0 in c:  # meta without channel counts: ask the encoder once
                out = self.runtime.infer(np.zeros((1, 3) + tuple(self.meta.input_size), np.float32))
                c = tuple(int(out[n].shape[1]) for n in ("feat1", "feat2", "feat3"))
            self._channels = c
        return self._channels

    def _features(self, rgbs: Sequence[np.ndarray], spec, transform):
        """RGB images at the input size -> (features [N, P, D], theta_inv of stage 3 [N, 2, 3]).
        Assembly is the compiled road's own (features.assemble)."""
        feats, thetas = [], []
        compiled = features.layout(spec, transform)
        for s in range(0, len(rgbs), self.batch_size):
            out = self.runtime.infer(preprocess.normalise(rgbs[s:s + self.batch_size], self.meta))
            feats.append(features.assemble(out, spec, transform, self.threads, compiled))
            thetas.append(np.ascontiguousarray(out["theta_inv"][:, 2], np.float32))
        return np.concatenate(feats), np.concatenate(thetas)

    def _image_scores(self, feats, thetas, tensors, est, spec, sigma, rule) -> np.ndarray:
        """Image scores of assembled features against estimator state `tensors`: the
        road's scoring code (distances, map, rule), as inspection runs it."""
        return scoring.image_scores(feats, thetas, tensors, est, spec, sigma, rule, self.threads)

    # ---- enrollment ------------------------------------------------------------------
    def enroll(self, images, estimator: str = "patchcore", augment="auto", seed: int = 0,
               select: str = "wasserstein", localisation: str = "unwarp",
               target_fpr: float = 0.01, sigma: float = 4.0, max_units: int = 0,
               synth_per_unit: int = 4, progress=None,
               image_score: str = postprocess.DEFAULT_IMAGE_SCORE,
               prior_exclude: Sequence[str] = (), **estimator_params) -> Profile:
        """K good images (paths or arrays) -> Profile. See docs/profile-format.md.

        image_score: "top20%" (default: mean of the hottest 20 % of the map, measured best
        on both real categories), "max" (the classic map maximum; PatchCore Eq. 7), "mean"
        or "top<P>%"; stored in the profile and used by inspect and the threshold.

        max_units: leave-one-out units for the threshold (0 = every support image when
        K >= 2, K1_UNITS augmented views when K = 1).
        prior_exclude: category names whose records the threshold's cross-category prior
        must not use (the evaluation passes the category it evaluates).

        progress: optional callable(fraction_done in [0, 1], stage name), called as
        enrollment moves through load, encode, augment, fit and calibrate."""
        if not 0 < target_fpr < 1:
            raise UserInputError(f"target_fpr: must be in (0, 1), got {target_fpr}")
        self._local.progress = progress or _no_progress
        rule = postprocess.check_image_score(image_score)
        with single_thread_blas():
            return self._enroll(images, estimator, augment, seed, select, localisation,
                                target_fpr, sigma, max_units, synth_per_unit, rule,
                                tuple(prior_exclude), estimator_params)

    def _enroll(self, images, estimator, augment, seed, select, localisation, target_fpr,
                sigma, max_units, synth_per_unit, rule, prior_exclude, estimator_params) -> Profile:
        t, times = time.perf_counter(), {}
        size = tuple(self.meta.input_size)
        names = [preprocess.describe(im, i) for i, im in enumerate(
            [images] if isinstance(images, (str, Path, np.ndarray)) else list(images))]
        rgbs = [preprocess.resize(x, size) for x in preprocess.load_all(images, "support images")]
        times["load"] = _ms(t)
        self._progress(0.05, "load")
        est = make_estimator(estimator, **estimator_params)
        spec = FeatureSpec(self.meta.backbone, self.channels, size, est.grid_stride,
                           localisation, est.aggregate)
        transform = est.input_transform(spec.d_in, seed)
        t = time.perf_counter()
        f0, th0 = self._features(rgbs, spec, transform)
        times["encode_support"] = _ms(t)
        self._progress(0.15, "encode")
        t = time.perf_counter()
        views, record = self._augment(rgbs, f0, spec, transform, augment, select)
        times["augment_select"] = _ms(t)
        k = len(rgbs)
        feats = np.concatenate([f0] + [v[0] for v in views])
        thetas = np.concatenate([th0] + [v[1] for v in views])
        view_id = np.repeat(np.arange(len(views) + 1), k)
        source = np.tile(np.arange(k), len(views) + 1)
        units = source if k >= 2 else view_id   # leave-one-out unit (see calibration)
        # the second image inside each row (mixup views blend two support images)
        partner = np.concatenate([np.arange(k)] + [[aug.partner(op, i, k) for i in range(k)]
                                             for op in record["ops"]]) if k >= 2 else units
        if len(np.unique(units)) < 2:
            raise UserInputError("support images: one image and no augmentation leaves nothing "
                                 "to hold out for the threshold; give >= 2 images or augment")
        t = time.perf_counter()
        fitted = est.fit(feats, spec.grid, units, seed)
        times["fit"] = _ms(t)
        self._progress(0.7, "fit")
        t = time.perf_counter()
        # Inspection never augments, so with K >= 2 the held-out image is scored as it
        # is; its flipped/rotated views would push the threshold above real defects.
        probe = view_id == 0 if k >= 2 else np.ones(len(units), bool)
        calib = self._calibrate(est, spec, transform, feats, thetas, (units, partner), probe,
                                source, rgbs, sigma, rule, target_fpr, max_units,
                                synth_per_unit, seed, prior_exclude)
        times["calibrate"] = _ms(t)
        self._progress(1.0, "calibrate")
        info = {"encoder": self.meta.to_dict(), "features": spec.to_dict(),
                "localisation": localisation, "image_score": rule,
                "estimator_params": est.params,
                "estimator_stats": fitted.stats, "augment": record, "calibration": calib,
                "normalisation": {"mean": list(self.meta.mean), "std": list(self.meta.std),
                                  "scale": self.meta.scale},
                "support": {"k": k, "images": names, "n_views": int(len(feats))},
                "seed": seed, "timings_ms": {n: round(v, 1) for n, v in times.items()}}
        tensors = dict(fitted.tensors)
        tensors.update(transform)
        return Profile(est.name, tensors, calib["threshold"], spec.grid, size, sigma,
                       self.meta.encoder_hash, info)

    def _view(self, images, spec, transform, i, n):
        """Features of one augmented view of the support set; progress 0.15 -> 0.6."""
        out = self._features(images, spec, transform)
        self._progress(0.15 + 0.45 * (i + 1) / max(n, 1), "augment")
        return out

    def _augment(self, rgbs, f0, spec, transform, augment, select):
        """-> ([(features, thetas) per op], record for the profile)."""
        if augment != "auto":
            ops = aug.expand(augment)
            return ([self._view(aug.apply([op], rgbs), spec, transform, i, len(ops))
                     for i, op in enumerate(ops)],
                    {"request": augment if isinstance(augment, str) else list(augment),
                     "ops": ops})
        base = selection.pool(f0, spec.grid)
        dists, per_group = {}, {}
        n_ops = sum(len(ops) for ops in aug.CANDIDATES.values())
        for group, ops in aug.CANDIDATES.items():
            done = sum(len(v) for v in per_group.values())
            per_group[group] = [self._view(aug.apply([op], rgbs), spec, transform, done + i, n_ops)
                                for i, op in enumerate(ops)]
            fv = np.concatenate([v[0] for v in per_group[group]])
            dists[group] = selection.distance(base, selection.pool(fv, spec.grid), select)
        chosen = selection.choose(dists)
        ops = [op for g in chosen for op in aug.CANDIDATES[g]]
        return ([v for g in chosen for v in per_group[g]],
                {"request": "auto", "method": select, "distances": dists, "chosen": chosen,
                 "ops": ops, "rule": "keep groups with distance <= mean distance"})

    def _calibrate(self, est, spec, transform, feats, thetas, units, probe, source, rgbs, sigma,
                   rule, target_fpr, max_units, synth_per_unit, seed, prior_exclude):
        """Leave-one-out scores of every unit (the estimator re-fitted without it, PatchCore's
        coreset included), then the tail-model threshold (calibration/threshold.py)."""
        from .calibration.tail_prior import TailPrior
        from .calibration.threshold import loo_threshold, synthetic_detection
        k = len(rgbs)
        units, partner = units
        held = _held_units(units, max_units or (0 if k >= 2 else K1_UNITS), seed)
        good, synth = [], []
        for n, u in enumerate(held):
            self._progress(0.7 + 0.3 * n / len(held), "calibrate")
            keep = (units != u) & (partner != u)   # no view that contains unit u
            state = est.fit(feats[keep], spec.grid, units[keep], seed).tensors
            rows = (units == u) & probe
            good.append(self._image_scores(feats[rows], thetas[rows], state, est, spec, sigma, rule))
            if n < SYNTH_UNITS and synth_per_unit > 0:
                synth.append(self._synthetic_scores(rgbs[int(source[units == u][0])], state, est,
                                                    spec, transform, sigma, rule,
                                                    synth_per_unit, (seed, u)))
        loo = np.concatenate(good).astype(np.float64)
        prior = TailPrior.default(est.name, rule, prior_exclude)
        res = loo_threshold(loo, k, target_fpr, prior)
        syn = np.concatenate(synth) if synth else np.zeros(0)
        res.update({"held_out_units": held, "loo_scores": [round(float(s), 6) for s in loo],
                    "prior_exclude": list(prior_exclude),
                    "synthetic_scores": [round(float(s), 6) for s in syn],
                    "expected_detection_rate": synthetic_detection(syn, res["threshold"])})
        return res

    def _synthetic_scores(self, img, state, est, spec, transform, sigma, rule, n, seed):
        """Synthetic defects pasted on a held-out image, scored against its LOO state: a
        guide to detection at the threshold, not a measured recall."""
        rng = np.random.default_rng(list(seed))
        fake = [synth.paste_defects(img, rng)[0] for _ in range(n)]
        f, th = self._features(fake, spec, transform)
        return self._image_scores(f, th, state, est, spec, sigma, rule)

    # ---- inspection ------------------------------------------------------------------
    def _prepared(self, profile: Profile, overrides: dict) -> "scoring.Road":
        # cached on the profile object itself (id()-keyed caches go stale when ids are
        # reused); a replaced tensor rebuilds it, the threshold is read per call
        return scoring.road(profile, overrides)

    def check(self, profile: Profile) -> None:
        """Refuse a profile made with another encoder or input size."""
        profile.check_encoder(self.meta.encoder_hash, self.meta.backbone)
        if tuple(profile.image_size) != tuple(self.meta.input_size):
            raise EncoderMismatch(f"{profile.path or 'profile'}: enrolled at input size "
                                  f"{tuple(profile.image_size)}, the encoder takes "
                                  f"{tuple(self.meta.input_size)}; re-enroll")

    def inspect(self, image, profile, **overrides) -> Result:
        return self.inspect_batch([image], profile, **overrides)[0]

    def inspect_batch(self, images, profile, **overrides) -> List[Result]:
        """Score images against a profile (a Profile or a .careg path). `overrides` change
        estimator options at inspection time, e.g. search="local", radius=2."""
        if isinstance(profile, (str, Path)):
            profile = Profile.load(profile)
        self.check(profile)
        road = self._prepared(profile, overrides)
        single = isinstance(images, (str, Path)) or (isinstance(images, np.ndarray)
                                                      and images.ndim in (2, 3))
        images = [images] if single else list(images)
        results: List[Result] = []
        for s in range(0, len(images), self.batch_size):
            results += self._inspect_chunk(images[s:s + self.batch_size], s, profile, road)
        return results

    def _inspect_chunk(self, images, offset, profile, road) -> List[Result]:
        times, t = {}, time.perf_counter()
        rgbs = [preprocess.load(im, preprocess.describe(im, offset + i)) for i, im in enumerate(images)]
        sizes = [r.shape[:2] for r in rgbs]
        x = preprocess.normalise([preprocess.resize(r, road.spec.input_size) for r in rgbs], self.meta)
        times["preprocess"] = _ms(t)
        t = time.perf_counter()
        out = self.runtime.infer(x)
        times["encode"] = _ms(t)
        t = time.perf_counter()
        threshold = float(profile.threshold)   # read per call: live re-calibration may change it
        res = scoring.inspect(road, out, threshold, sizes, self.threads)
        core = res["timings"]
        times["features"], times["score"] = core["features"], core["score"]
        # the map, image score, verdict and the resize to each image's size
        times["postprocess"] = max(0.0, _ms(t) - core["features"] - core["score"])
        per_image = {k: v / len(rgbs) for k, v in times.items()}
        return [decide(res["scores"][i], res["maps_at"][i], threshold, per_image, res["defect"][i],
                       res["reason"][i]) for i in range(len(rgbs))]
