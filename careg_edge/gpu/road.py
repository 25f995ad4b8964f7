"""GpuRoad: the whole inspection road on one torch device -- raw encoder outputs ->
features -> distances -> anomaly map -> image score -> verdict -- with the same
outputs, NaN/inf policy and error messages as the compiled core's `_core.inspect`
(careg_edge.scoring), which stays the road on the host.

Why torch and not CUDA kernels in the core: the encoder's outputs already are torch
tensors on the GPU (no copy to the host and back), and torch code runs unchanged on
CPU torch, where every CI machine tests it against the compiled core and the NumPy
oracle (tests/test_gpu_road.py); CUDA kernels in the core could only be tested on a
CUDA machine.

A GpuRoad uploads a profile's tensors once and is immutable afterwards: threads may
share it. `cached_road` keeps one per profile object, device and overrides, rebuilt
when the compiled road (scoring.road, which validates the profile) is rebuilt.
"""
from __future__ import annotations

import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import scoring
from ..errors import CaregError, UserInputError
from ..estimators import make_estimator
from ..postprocess import check_image_score
from . import preprocess as gpu_preprocess
from .assemble import Assembly, all_finite, check_outputs
from .distances import KERNELS
from .maps import Blur, check_invertible, image_scores, resize_each, unwarp
from .precision import full_fp32
from .transfer import upload


class Inspection(NamedTuple):
    scores: np.ndarray        # [B] float32 image scores
    maps: torch.Tensor        # [B, image_h, image_w] float32 on the device
    defect: List[bool]        # score > threshold, or score / threshold not finite
    reason: List[str]         # one line each, the core's wording


def verdict(score: float, threshold: float) -> Tuple[bool, str]:
    """careg::verdict (road_score.cpp), word for word."""
    if not np.isfinite(score):
        return True, (f"image score is {'NaN' if np.isnan(score) else 'inf'}: non-finite distances or "
                      "map values (profile tensors with NaN/inf, or features so large they overflow); "
                      "a score that cannot be trusted is a defect")
    if not np.isfinite(threshold):
        return True, "the threshold is not finite; a score cannot be judged against it, so this is a defect"
    d = bool(score > threshold)
    return d, f"score {score:g} {'>' if d else '<='} threshold {threshold:g}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """"cuda" names the current CUDA device, "cuda:0" one by number: the same when they agree."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class GpuRoad:
    def __init__(self, profile, device="cuda", overrides: Optional[dict] = None,
                 compiled: Optional["scoring.Road"] = None):
        overrides = dict(overrides or {})
        # the compiled road validates the profile exactly as the core does
        self.compiled = compiled if compiled is not None else scoring.road(profile, overrides)
        self.device = torch.device(device)
        spec = self.spec = self.compiled.spec
        est = make_estimator(profile.estimator,
                             **dict(profile.info.get("estimator_params", {}), **overrides))
        self.estimator = profile.estimator
        self.image_size = tuple(int(s) for s in profile.image_size)
        rule = check_image_score(profile.image_score)
        self.rule = "top" if rule.startswith("top") else rule
        self.percent = 0.0 if rule == "max" else 100.0 if rule == "mean" else float(rule[3:-1])
        self.assembly = Assembly(spec, self.compiled.transform, self.device)
        self.blur = Blur(float(profile.sigma), *self.image_size, self.device)
        # the estimator's state on the device: the kernel its class names
        self.kernel = KERNELS[est.gpu_kernel](profile.tensors, spec.grid, est.params, self.device)
        dim = self.kernel.dim
        if self.assembly.dim != dim:
            raise CaregError(f"profile: assembly gives D = {self.assembly.dim} features (channel_index/"
                             f"projection) but the estimator tensors have D = {dim}")

    # ---- the road ----------------------------------------------------------------
    def _tensors(self, out) -> Dict[str, torch.Tensor]:
        """Encoder outputs (tensors or arrays) as float32 tensors on this road's device."""
        res = {}
        for n in ("feat1", "feat2", "feat3", "theta", "theta_inv"):
            if n not in out:
                raise CaregError(f"encoder outputs lack '{n}'")
            res[n] = upload(out[n], self.device).to(torch.float32)
        return res

    def run(self, out, threshold: float) -> dict:
        """Encoder outputs -> {dist, maps (device tensors), scores, defect, reason, timings}."""
        with torch.inference_mode(), full_fp32():
            return self._run(self._tensors(out), float(threshold))

    def _run(self, out: Dict[str, torch.Tensor], threshold: float) -> dict:
        t = time.perf_counter()
        B = check_outputs(out, self.assembly.channels)
        if B == 0:
            return self._empty()
        x = self.assembly(out)
        if not bool(all_finite(x).all()):
            bad = (~torch.isfinite(x)).reshape(B, -1).sum(1).cpu()
            b = int(torch.nonzero(bad)[0, 0])
            raise CaregError(f"features[{b}]: {int(bad[b])} non-finite value(s) (NaN/inf); the "
                             "encoder output was broken")
        timings = {"features": _ms(t)}
        t = time.perf_counter()
        dist, found = self.kernel.distances(x)
        _sync(self.device)
        timings["score"] = _ms(t)
        t = time.perf_counter()
        gh, gw = self.spec.grid
        dist = dist.reshape(B, gh, gw)
        maps, scores = self._map_and_scores(out, x, dist, found)
        timings["postprocess"] = _ms(t)
        judged = [verdict(float(s), threshold) for s in scores]
        return {"dist": dist, "maps": maps, "scores": scores, "defect": [d for d, _ in judged],
                "reason": [r for _, r in judged], "timings": timings}

    def _map_and_scores(self, out, x, dist, found) -> Tuple[torch.Tensor, np.ndarray]:
        """Distances [B, gh, gw] -> (blurred maps in the image frame, image scores on
        the host): the kernel's own image score where it has one for the rule (Eq. 7
        for PatchCore with "max"), else the map rule."""
        th3 = out["theta_inv"][:, 2] if self.spec.mode == "registered" else None
        if th3 is not None:
            check_invertible(th3)
        maps = self.blur(unwarp(dist, th3, self.image_size))
        scores = self.kernel.image_scores(x, dist.flatten(1), found, self.rule)
        if scores is None:
            scores = image_scores(maps, self.rule, self.percent)
        return maps, scores.float().cpu().numpy()

    def _empty(self) -> dict:
        gh, gw = self.spec.grid
        z = torch.zeros
        return {"dist": z((0, gh, gw), device=self.device), "maps": z((0,) + self.image_size, device=self.device),
                "scores": np.zeros(0, np.float32), "defect": [], "reason": [],
                "timings": {"features": 0.0, "score": 0.0, "postprocess": 0.0}}

    def inspect(self, feat1, feat2, feat3, theta, theta_inv, threshold: float) -> Inspection:
        """The road on one batch of encoder outputs (tensors on any device, or arrays)."""
        r = self.run({"feat1": feat1, "feat2": feat2, "feat3": feat3, "theta": theta,
                      "theta_inv": theta_inv}, threshold)
        return Inspection(r["scores"], r["maps"], r["defect"], r["reason"])

    def inspect_dict(self, out, threshold: float,
                     sizes: Optional[Sequence[Tuple[int, int]]] = None, host_maps: bool = True) -> dict:
        """Exactly `_core.inspect`'s result: {dist, maps, scores, defect, reason, maps_at,
        timings} as NumPy arrays / lists (maps_at: each map at its image's size).
        host_maps=False leaves dist and maps on the device (the Inspector reads only
        maps_at: one transfer of the maps, not two)."""
        r = self.run(out, threshold)
        B = len(r["scores"])
        if sizes is not None and len(sizes) != B:
            raise CaregError(f"sizes: {len(sizes)} entries for a batch of {B}")
        t = time.perf_counter()
        with torch.inference_mode():
            maps_at = resize_each(r["maps"], sizes) if sizes is not None else []
        r["timings"]["postprocess"] += _ms(t)
        r["maps_at"] = maps_at
        if host_maps:
            r["dist"], r["maps"] = r["dist"].cpu().numpy(), r["maps"].cpu().numpy()
        return r


def cached_road(profile, overrides: Optional[dict], device) -> GpuRoad:
    """The GpuRoad of (profile, overrides, device), kept on the profile object and
    rebuilt when its compiled road is (replaced tensors, other metadata)."""
    overrides = dict(overrides or {})
    compiled = scoring.road(profile, overrides)
    cache = profile.__dict__.setdefault("_gpu_road", {})
    key = (str(device), tuple(sorted(overrides.items())))
    hit = cache.get(key)
    if hit is not None and hit.compiled is compiled:
        return hit
    built = GpuRoad(profile, device, overrides, compiled)
    for k, v in list(cache.items()):   # stale uploads are not kept alive on the device
        if len(cache) > 4 or any(profile.tensors.get(n) is not a for n, a in v.compiled.arrays):
            cache.pop(k, None)         # another thread may have dropped it already
    cache[key] = built
    return built


def device_outputs(runtime, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The encoder's five outputs for a normalised batch already on the device. The
    torch runtime runs its encoder there (no trip through the host); any other
    runtime goes through its infer() on the host and the outputs are uploaded."""
    from ..runtime.base import OUTPUT_NAMES
    from ..runtime.torch_backend import TorchRuntime
    if isinstance(runtime, TorchRuntime) and _same_device(torch.device(runtime.device), x.device):
        h, w = runtime.meta.input_size
        if tuple(x.shape[1:]) != (3, h, w):
            raise UserInputError(f"encoder input: expected float32 [B, 3, {h}, {w}], got "
                                 f"{x.dtype} {list(x.shape)}")
        with torch.inference_mode():
            return dict(zip(OUTPUT_NAMES, runtime.encoder(x)))
    out = runtime.infer(x.cpu().numpy())
    return {n: upload(out[n], x.device) for n in OUTPUT_NAMES}


def inspect_images(runtime, road: GpuRoad, rgbs: Sequence[np.ndarray], threshold: float,
                   sizes: Sequence[Tuple[int, int]]) -> Tuple[dict, Dict[str, float]]:
    """Decoded RGB uint8 images -> (`_core.inspect`-shaped result, ms per stage): resize
    and normalisation, the encoder and the road all on the road's device."""
    times, t = {}, time.perf_counter()
    x = gpu_preprocess.to_input(rgbs, road.spec.input_size, runtime.meta, road.device)
    _sync(road.device)
    times["preprocess"] = _ms(t)
    t = time.perf_counter()
    out = device_outputs(runtime, x)
    _sync(road.device)
    times["encode"] = _ms(t)
    t = time.perf_counter()
    res = road.inspect_dict(out, threshold, sizes, host_maps=False)
    core = res["timings"]
    times["features"], times["score"] = core["features"], core["score"]
    times["postprocess"] = max(0.0, _ms(t) - core["features"] - core["score"])
    return res, times
