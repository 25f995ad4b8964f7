"""How the rounds of one category are enrolled and scored: passes over its images.

The encoder is the expensive part and does not depend on the support set, so the
pending profiles of a category are enrolled first (as many as `max_profile_bytes`
holds), then the test set (in chunks whose maps fit in `max_map_bytes`) and the other
good images are streamed, each image read and encoded once per pass and scored by
every profile that has not seen it (encoder outputs are memoised by input bytes).
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import imageio
from .datasets import Category, read_mask
from .line_metrics import DEFAULT_TARGETS, default_threshold_for
from .round_result import RoundJob, finish_round, finish_test_metrics


class EncoderMemo:
    """Wraps a Runtime: remembers recent encoder outputs by input bytes (LRU, bounded).

    Estimators enrolled on the same support set encode exactly the same batches
    (originals, augmented views, synthetic calibration defects), and every profile
    of a chunk scores the same test image: both are encoded once."""

    def __init__(self, inner, max_bytes: float = 1.5e9):
        # saved_ms: encoder time a hit avoided, added back to enroll/infer times so
        # the reported timings are what a user without the memo would see
        self.inner, self.max_bytes, self.saved_ms, self.misses = inner, max_bytes, 0.0, 0
        self._lru, self._bytes = OrderedDict(), 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, batch):
        key = hashlib.sha1(np.ascontiguousarray(batch).view(np.uint8)).digest() + bytes(str(batch.shape), "ascii")
        if key in self._lru:
            self._lru.move_to_end(key)
            out, ms = self._lru[key]
            self.saved_ms += ms
            return out
        t = time.perf_counter()
        out = self.inner.infer(batch)
        self.misses += 1
        self._lru[key] = (out, (time.perf_counter() - t) * 1e3)
        self._bytes += sum(v.nbytes for v in out.values())
        while self._bytes > self.max_bytes and len(self._lru) > 1:
            _, (old, _) = self._lru.popitem(last=False)
            self._bytes -= sum(v.nbytes for v in old.values())
        return out


def memoise_encoder(insp) -> Optional[EncoderMemo]:
    """Put an EncoderMemo in front of the Inspector's runtime (None when it has none)."""
    rt = getattr(insp, "runtime", None)
    if rt is None or not hasattr(rt, "infer"):
        return None
    memo = EncoderMemo(rt)
    insp.runtime = memo
    return memo


def _saved_ms(memo) -> float:
    return memo.saved_ms if memo is not None else 0.0


def _enroll(insp, memo, job: RoundJob, images: List[np.ndarray]) -> None:
    job.enroll_kwargs = job.cfg.enroll_kwargs(job.cat)
    before, t = _saved_ms(memo), time.perf_counter()
    job.profile = insp.enroll(images, **job.enroll_kwargs)
    job.enroll_s = time.perf_counter() - t + (_saved_ms(memo) - before) / 1e3


def _score(insp, memo, job: RoundJob, image: np.ndarray) -> None:
    before, t = _saved_ms(memo), time.perf_counter()
    r = insp.inspect(image, job.profile)
    ms = (time.perf_counter() - t) * 1e3 + _saved_ms(memo) - before  # encoder reuse added back
    amap = np.asarray(r.anomaly_map, np.float32)
    if amap.shape != image.shape[:2]:
        import cv2
        amap = cv2.resize(amap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    job.scores.append(float(r.score))
    job.flagged.append(bool(r.is_defect))
    job.maps.append(amap)
    job.infer_ms.append(ms)
    job.threshold = float(r.threshold)


def work_units(cat: Category, job: RoundJob) -> int:
    """Progress units of one round: its enrollment and every image it scores."""
    return 1 + len(cat.test) + len(cat.unseen_good(job.support)) - sum(1 for t in cat.test if not t.label)


def _map_bytes(cat: Category) -> int:
    """Bytes of one round's anomaly maps (float32 at image size), from file headers only."""
    from PIL import Image
    total = 0
    for t in cat.test:
        with Image.open(t.path) as im:  # header only: no pixel data decoded
            total += im.size[0] * im.size[1] * 4
    return total


def _profile_bytes(profile) -> int:
    """Memory one enrolled profile holds: its tensors, twice (the scoring road may keep
    its own prepared copy)."""
    tensors = getattr(profile, "tensors", None) or {}
    return 2 * sum(int(getattr(v, "nbytes", 0)) for v in tensors.values())


def run_category(cat: Category, jobs: List[RoundJob], inspectors, make_inspector, bar,
                 max_map_bytes: float, targets: Sequence[float] = DEFAULT_TARGETS,
                 threshold_for: Callable = default_threshold_for,
                 max_profile_bytes: float = 3e9) -> None:
    """Enroll as many profiles as `max_profile_bytes` holds (a group); stream the test
    set once per chunk of the group whose anomaly maps fit in `max_map_bytes`; then
    stream the other good images once for the whole group (scores only, no maps).
    `inspectors` keeps one (Inspector, memo) per (model, backend) across categories."""
    if not jobs:
        return
    group_size = max(1, int(max_map_bytes // max(_map_bytes(cat), 1)))
    by_model: Dict[tuple, List[RoundJob]] = {}
    for j in jobs:
        by_model.setdefault((j.cfg.model, j.cfg.backend), []).append(j)
    train_by_name = {p.name: p for p in cat.train}
    for key, pending in by_model.items():
        if key not in inspectors:
            insp = make_inspector(pending[0].cfg)
            inspectors[key] = (insp, memoise_encoder(insp))
        insp, memo = inspectors[key]
        # same support set adjacent: the encoder memo serves the other estimators
        pending = sorted(pending, key=lambda j: (j.k, j.rnd, j.cfg.label()))
        while pending:
            group, held = [], 0
            # every profile of the group exists before any test file is opened
            while pending and (not group or held < max_profile_bytes):
                j = pending.pop(0)
                _enroll(insp, memo, j, [imageio.read_image(train_by_name[n]) for n in j.support])
                held += _profile_bytes(j.profile)
                group.append(j)
                bar.update(1, f"{cat.name} enroll {j.cfg.label()} K={j.k} r={j.rnd}")
            for g in range(0, len(group), group_size):
                _score_test_set(insp, memo, cat, group[g:g + group_size], bar)
            _score_other_goods(insp, cat, group, bar)
            for j in group:
                finish_round(j, cat, targets, threshold_for)


def _score_test_set(insp, memo, cat: Category, chunk: List[RoundJob], bar) -> None:
    """Each test image read once and scored by every profile of the chunk (maps kept
    for the pixel metrics), then the chunk's test-set metrics."""
    for item in cat.test:
        image = imageio.read_image(item.path)
        for j in chunk:
            _score(insp, memo, j, image)
        bar.update(len(chunk), f"{cat.name} inspect")
    masks = [read_mask(t, m.shape) for t, m in zip(cat.test, chunk[0].maps)]
    for j in chunk:
        finish_test_metrics(j, cat, masks)


def _score_other_goods(insp, cat: Category, chunk: List[RoundJob], bar) -> None:
    """Good images outside the test set (train/good, validation/good): each read once,
    and scored (image score only, no map kept) by every profile of the group that did
    not enroll on it; the profiles score it one after the other, so the encoder memo
    encodes it once."""
    supports = [set(j.support) for j in chunk]
    others = [(p, True) for p in cat.train] + [(p, False) for p in cat.extra_good]
    for path, in_train in others:
        jobs = [j for j, sup in zip(chunk, supports) if not (in_train and path.name in sup)]
        if not jobs:
            continue
        image = imageio.read_image(path)
        for j in jobs:
            j.unseen[str(path)] = float(insp.inspect(image, j.profile).score)
        bar.update(len(jobs), f"{cat.name} unseen good")
