"""Python side of the one compiled road (cpp/src/road_*.cpp): raw encoder outputs ->
features -> distances -> anomaly map -> image score -> verdict, in one C++ call.

`Inspector.inspect_batch` calls `inspect`; enrollment calls `features.assemble` and
`image_scores` (the same C++ assembly and scoring on already-assembled features);
the C API (`careg_inspect`, `careg_score`) runs the same functions. The NumPy
reference of the whole road lives in tests/reference.py only.

The compiled profile (`_core.Layout` + `_core.Scorer`, tensors copied into C++) is
cached on the Profile object, keyed by the overrides and the scoring-relevant
metadata; replacing any tensor (a new array object in `profile.tensors`) rebuilds it.
In-place writes into a tensor array are not seen: assign a new array instead. The
threshold is not part of it: every call reads `profile.threshold`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from .container import write_container
from .estimators import make_estimator
from .estimators.registry import estimator_class
from .features import FeatureSpec, layout, outputs

TRANSFORM_KEYS = ("channel_index", "projection")
OUTPUTS_KIND, OUTPUTS_VERSION = "careg-encoder-outputs", 1


def scorer(estimator: str, tensors: Dict[str, np.ndarray], params: dict, grid: Tuple[int, int],
           image_size: Tuple[int, int], sigma: float, rule: str) -> "_core.Scorer":
    """Estimator state + map + rule as the compiled core holds them (tensors copied;
    the estimator's class says which tensors, in which dtypes, and which options)."""
    return _core.Scorer(estimator, list(grid), list(image_size), float(sigma), rule,
                        **estimator_class(estimator).scorer_args(tensors, params))


@dataclass
class Road:
    spec: FeatureSpec
    transform: Dict[str, np.ndarray]
    layout: "_core.Layout"
    scorer: "_core.Scorer"
    arrays: Tuple[Tuple[str, np.ndarray], ...]   # the tensors it was built from (identity check)


def _key(profile, overrides: dict) -> tuple:
    info = profile.info
    meta = json.dumps([profile.estimator, list(profile.grid), list(profile.image_size),
                       float(profile.sigma), profile.image_score, info.get("features"),
                       info.get("estimator_params")], sort_keys=True, default=str)
    return tuple(sorted(overrides.items())), meta


def road(profile, overrides: Optional[dict] = None) -> Road:
    """The compiled road of a profile (+ inspection-time estimator overrides, e.g.
    search="local", radius=2), cached on the profile object."""
    overrides = dict(overrides or {})
    cache = profile.__dict__.setdefault("_road", {})
    key = _key(profile, overrides)
    hit = cache.get(key)
    if hit is not None and len(hit.arrays) == len(profile.tensors) and \
            all(profile.tensors.get(k) is a for k, a in hit.arrays):
        return hit
    params = dict(profile.info.get("estimator_params", {}), **overrides)
    est = make_estimator(profile.estimator, **params)   # validates the overrides
    spec = FeatureSpec.from_dict(profile.info["features"])
    transform = {k: profile.tensors[k] for k in TRANSFORM_KEYS if k in profile.tensors}
    built = Road(spec, transform, layout(spec, transform),
                 scorer(profile.estimator, profile.tensors, est.params, profile.grid,
                        profile.image_size, profile.sigma, profile.image_score),
                 tuple(profile.tensors.items()))
    for k, v in list(cache.items()):   # stale tensors are not kept alive
        if len(cache) > 8 or any(profile.tensors.get(n) is not a for n, a in v.arrays):
            cache.pop(k, None)         # another thread may have dropped it already
    cache[key] = built
    return built


def inspect(r: Road, out: Dict[str, np.ndarray], threshold: float,
            sizes: Optional[Sequence[Tuple[int, int]]] = None, threads: int = 0) -> dict:
    """Raw encoder outputs -> {dist, maps, scores, defect, reason, maps_at, timings}:
    one call of the compiled road (`_core.inspect`)."""
    return _core.inspect(r.layout, r.scorer, outputs(out), float(threshold),
                         None if sizes is None else [tuple(map(int, s)) for s in sizes], threads)


def image_scores(feats: np.ndarray, thetas: np.ndarray, tensors: Dict[str, np.ndarray], est,
                 spec: FeatureSpec, sigma: float, rule: str, threads: int = 0,
                 chunk: int = 16) -> np.ndarray:
    """Image scores of assembled features [N, P, D] against estimator state `tensors`
    (e.g. a leave-one-out state): the road's scoring code, without the assembly.
    thetas: stage-3 theta_inv [N, 2, 3] (used in registered mode)."""
    sc = scorer(est.name, tensors, est.params, spec.grid, spec.input_size, sigma, rule)
    out: List[np.ndarray] = []
    for s in range(0, len(feats), chunk):
        th = np.ascontiguousarray(thetas[s:s + chunk], np.float32) if spec.mode == "registered" else None
        out.append(_core.score(sc, np.ascontiguousarray(feats[s:s + chunk], np.float32), th,
                               threads)["scores"])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def save_outputs(path, out: Dict[str, np.ndarray], inputs: Optional[np.ndarray] = None,
                 note: str = "") -> None:
    """Write one batch of encoder outputs (and optionally the normalised input the
    encoder saw) as a container the C API reads (`careg_outputs_load`): for C
    programs that do not run the encoder themselves (cpp/examples/inspect.c)."""
    tensors = dict(outputs(out))
    if inputs is not None:
        tensors["input"] = np.ascontiguousarray(inputs, np.float32)
    write_container(path, tensors, {"note": note}, OUTPUTS_KIND, OUTPUTS_VERSION)


def write_ppm(path, rgb: np.ndarray) -> None:
    """Binary PPM (P6, maxval 255) of an RGB uint8 image: the format the C example
    decodes without any image library."""
    from .container import atomic_write_bytes
    rgb = np.ascontiguousarray(rgb, np.uint8)
    h, w = rgb.shape[:2]
    atomic_write_bytes(path, f"P6\n{w} {h}\n255\n".encode() + rgb.tobytes())


def main(argv=None) -> int:
    """python -m careg_edge.scoring IMAGE PROFILE -o OUT.careg-out [--ppm OUT.ppm]
    [--model M]: encode IMAGE with the profile's encoder input size and write the raw
    outputs (and the image at the input size as PPM) for the C example."""
    import argparse

    from . import Inspector, preprocess
    from .profile import Profile
    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("profile")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--ppm", default=None)
    ap.add_argument("--model", default=None)
    a = ap.parse_args(argv)
    insp = Inspector(a.model)
    prof = Profile.load(a.profile)
    insp.check(prof)
    rgb = preprocess.resize(preprocess.load(a.image, a.image), tuple(prof.image_size))
    x = preprocess.normalise([rgb], insp.meta)
    save_outputs(a.output, insp.runtime.infer(x), x, note=f"encoder outputs of {a.image}")
    if a.ppm:
        write_ppm(a.ppm, rgb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
