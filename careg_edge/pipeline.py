"""The public API: `Inspector.enroll` (K good images -> Profile; the work is in
enrollment.py) and `Inspector.inspect` / `inspect_batch` (image + Profile -> Result).

Inspection:  preprocess -> encode -> one call of the compiled road (careg_edge.scoring:
features, distances, anomaly map, image score, verdict; the C API runs the same).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from . import features, postprocess, preprocess, scoring
from .decision import Result, decide
from .enrollment import Enrollment, EnrollSettings
from .errors import EncoderMismatch
from .gpu.device import road_device
from .profile import Profile
from .runtime.base import Runtime
from .runtime.precision import check_precision

__all__ = ["Inspector", "Result", "open_runtime"]
TRANSFORM_KEYS = scoring.TRANSFORM_KEYS


def open_runtime(model=None, backend: str = "auto", threads: int = 0,
                 device: str = "auto") -> Runtime:
    """A Runtime instance, a model path, "imagenet:<backbone>" or None (the bundled
    encoder, resolved by runtime.load_runtime on `device`: auto, cpu, cuda[:N])."""
    if isinstance(model, Runtime):
        return model
    from .runtime import load_runtime
    return load_runtime(model, backend, threads, verbose=False, device=device)


def single_thread_blas():
    """Batched small LAPACK calls (100x100 inverses, eigh) run far faster with one
    BLAS thread per process than with OpenBLAS threads fighting over busy cores
    (measured 0.7 s vs 5.6 s for 256 inverses on 2 loaded cores)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def check_profile(meta, profile: Profile) -> None:
    """Refuse a profile made with another encoder, input size or precision than the
    encoder described by `meta` (an EncoderMeta; no runtime needed)."""
    profile.check_encoder(meta.encoder_hash, meta.backbone)
    if tuple(profile.image_size) != tuple(meta.input_size):
        raise EncoderMismatch(f"{profile.path or 'profile'}: enrolled at input size "
                              f"{tuple(profile.image_size)}, the encoder takes "
                              f"{tuple(meta.input_size)}; re-enroll")
    # same hash, other precision (an INT8 engine of the FP32 encoder): runtime/precision.py
    check_precision(profile.info, meta.extra, profile.path or "profile")


class Inspector:
    def __init__(self, model=None, backend: str = "auto", threads: int = 0, batch_size: int = 8,
                 device: str = "auto"):
        self.runtime = open_runtime(model, backend, threads, device)
        self.meta = self.runtime.meta
        self.threads, self.batch_size = int(threads), max(1, int(batch_size))
        self._channels = None
        # the torch road on the runtime's GPU, or None: the compiled core (gpu/device.py)
        self.road_device = road_device(self.runtime)

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

    # ---- enrollment (careg_edge/enrollment.py) -----------------------------------------
    def enroll(self, images, estimator: str = "patchcore", augment="auto", seed: int = 0,
               select: str = "wasserstein", localisation: str = "unwarp",
               target_fpr: float = 0.01, sigma: float = 4.0, max_units: int = 0,
               synth_per_unit: int = 4, progress=None,
               image_score: str = postprocess.DEFAULT_IMAGE_SCORE,
               prior_exclude: Sequence[str] = (), **estimator_params) -> Profile:
        """K good images (paths or arrays) -> Profile. See docs/enrollment.md.

        image_score: "top20%" (default: mean of the hottest 20 % of the map, measured best
        on both real categories), "max" (the classic map maximum; PatchCore Eq. 7), "mean"
        or "top<P>%"; stored in the profile and used by inspect and the threshold.

        max_units: leave-one-out units for the threshold (0 = every support image when
        K >= 2, six augmented views when K = 1).
        prior_exclude: category names whose records the threshold's cross-category prior
        must not use (the evaluation passes the category it evaluates).

        progress: optional callable(fraction_done in [0, 1], stage name), called as
        enrollment moves through load, encode, augment, fit and calibrate."""
        settings = EnrollSettings(estimator, augment, seed, select, localisation, target_fpr,
                                  sigma, max_units, synth_per_unit, image_score,
                                  tuple(prior_exclude), dict(estimator_params))
        with single_thread_blas():
            return Enrollment(self, settings, progress).run(images)

    # ---- inspection ------------------------------------------------------------------
    def _prepared(self, profile: Profile, overrides: dict):
        # the compiled road (scoring.Road), or its GpuRoad on the runtime's device; cached
        # on the profile object itself (id()-keyed caches go stale when ids are reused);
        # a replaced tensor rebuilds it, the threshold is read per call
        if self.road_device is not None:
            from .gpu.road import cached_road
            return cached_road(profile, overrides, self.road_device)
        return scoring.road(profile, overrides)

    def check(self, profile: Profile) -> None:
        """Refuse a profile made with another encoder or input size."""
        check_profile(self.meta, profile)

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
        if self.road_device is not None:   # resize, encoder and road on the runtime's device
            from .gpu.road import inspect_images
            decode_ms, threshold = _ms(t), float(profile.threshold)
            res, times = inspect_images(self.runtime, road, rgbs, threshold, sizes)
            times["preprocess"] += decode_ms
            return self._results(res, threshold, times, len(rgbs))
        x = preprocess.encoder_input(rgbs, self.meta)   # meta.input_size = the profile's: check()
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
        return self._results(res, threshold, times, len(rgbs))

    @staticmethod
    def _results(res, threshold, times, n) -> List[Result]:
        per_image = {k: v / n for k, v in times.items()}
        return [decide(res["scores"][i], res["maps_at"][i], threshold, per_image, res["defect"][i],
                       res["reason"][i]) for i in range(n)]
