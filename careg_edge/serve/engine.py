"""Score a batch of (profile, image) items from many cameras and products at once.

The encoder does not depend on the product, so a dynamic batch is encoded in one
call whatever products it mixes (`encode`); only the scoring is per profile
(`score`: one compiled-road call per product, `scoring.inspect`, the call
`Inspector.inspect_batch` makes). The Python-backend model of the exported Triton
repository calls `score` on the encoder outputs Triton hands it.
"""
from __future__ import annotations

import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .. import preprocess, scoring
from ..decision import Result, decide


def encode(insp, rgbs: Sequence[np.ndarray]) -> Tuple[Dict[str, np.ndarray], float, float]:
    """RGB images -> (raw encoder outputs, preprocess ms, encode ms), in chunks of insp.batch_size."""
    t0 = time.perf_counter()
    x = preprocess.encoder_input(rgbs, insp.meta)
    t1 = time.perf_counter()
    step = max(1, insp.batch_size)
    parts = [insp.runtime.infer(x[s:s + step]) for s in range(0, len(x), step)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return out, (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000


def score(out: Dict[str, np.ndarray], profiles: Sequence[object], sizes: Sequence[Tuple[int, int]],
          threads: int = 0, timings: Dict[str, float] = None) -> List[Result]:
    """Encoder outputs of N images + the profile and original (h, w) of each -> N Results.
    Items that share a profile object are scored in one call."""
    groups: Dict[int, List[int]] = {}
    for i, prof in enumerate(profiles):
        groups.setdefault(id(prof), []).append(i)
    results: List[Result] = [None] * len(profiles)  # type: ignore[list-item]
    for idx in groups.values():
        prof = profiles[idx[0]]
        threshold = float(prof.threshold)
        sub = {k: np.ascontiguousarray(v[idx]) for k, v in out.items()}
        res = scoring.inspect(scoring.road(prof), sub, threshold, [sizes[i] for i in idx], threads)
        core = res["timings"]
        per = dict(timings or {}, features=core["features"] / len(idx), score=core["score"] / len(idx))
        for j, i in enumerate(idx):
            results[i] = decide(res["scores"][j], res["maps_at"][j], threshold, per,
                                res["defect"][j], res["reason"][j])
    return results


def inspect_items(insp, items: Sequence[Tuple[object, np.ndarray]]) -> List[Result]:
    """(Profile, RGB uint8 image) pairs -> one Result each, in order. Every profile
    must have passed insp.check (the registry does it when it loads one)."""
    if not items:
        return []
    rgbs = [rgb for _, rgb in items]
    out, pre_ms, enc_ms = encode(insp, rgbs)
    n = len(items)
    return score(out, [p for p, _ in items], [r.shape[:2] for r in rgbs], insp.threads,
                 {"preprocess": pre_ms / n, "encode": enc_ms / n})
