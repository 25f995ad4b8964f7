"""The inspection loop: capture thread -> batches -> inspector -> records, until the
source ends, --max-frames is reached or the user stops it; the learn phase of
`run --learn N` hooks in between batches."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..overlay import save_defect
from ..sources import Capture, Source, open_with_retry
from .frame_prep import prepare
from .records import Summary, emit, make_record, mark_learning, unreadable_record
from .window import Window


@dataclass
class LiveOptions:
    batch: int = 1
    roi: Optional[Tuple[int, int, int, int]] = None
    resize: Optional[Tuple[int, int]] = None
    resize_mode: str = "stretch"
    save_defects: Optional[Path] = None
    show: bool = False
    max_frames: Optional[int] = None
    queue_size: int = 8
    reconnect_s: float = 10.0
    publish: Optional[object] = None  # careg_edge.publish.Fanout: MQTT, OPC UA, web view


@contextmanager
def _graceful_stop(stop: threading.Event):
    """First Ctrl-C / SIGTERM: finish the current batch and summarise; second: abort."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _inspect(inspector, images: List[np.ndarray], profile) -> list:
    if len(images) == 1:
        return [inspector.inspect(im, profile) for im in images]
    return list(inspector.inspect_batch(images, profile))


def run_live(src: Source, inspector, profiles: Dict[str, object], out, opts: LiveOptions,
             log=lambda m: None, learner=None) -> Summary:
    """Score every frame the source yields; one JSON line each to `out`.

    `profiles` maps a display name to a loaded Profile. The source must not be
    open yet: it is opened here (with retries) so errors come before any output.
    `learner` (careg_edge.recalibrate.Learner, for `run --learn N`): the first N
    readable frames are learning frames; then each profile's threshold is fixed
    and written, and `profiles` holds the re-loaded profiles.
    """
    summary = Summary(source=src.label)
    stop = threading.Event()
    open_with_retry(src, opts.reconnect_s, stop, log)
    cap = Capture(src, opts.queue_size, opts.reconnect_s, log)
    window = Window(log) if opts.show else None
    if opts.save_defects is not None:
        opts.save_defects.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    cap.start()
    try:
        with _graceful_stop(stop):
            _loop(cap, inspector, profiles, out, opts, summary, stop, window, learner, log)
    except KeyboardInterrupt:  # second Ctrl-C: abandon the batch, still summarise
        summary.interrupted = True
    except BrokenPipeError:  # the consumer (`| head`, a closed socket) went away: stop quietly
        summary.interrupted = True
        _silence_stdout(out)
    finally:
        summary.elapsed_s = time.monotonic() - t_start
        summary.interrupted = summary.interrupted or stop.is_set()
        cap.stop()
        cap.join(timeout=5)
        summary.dropped = cap.dropped
        if window:
            window.close()
    # A reconnect cut short by Ctrl-C is the user's choice, not a lost camera.
    if cap.error is not None and not summary.interrupted:
        summary.error = cap.error
    if learner is not None and learner.active:
        why = ("interrupted" if summary.interrupted else
               "the source was lost" if summary.error is not None else "the source ended")
        learner.stop_early(profiles, why, log)
    return summary


def _silence_stdout(out) -> None:
    if out is sys.stdout:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def _loop(cap, inspector, profiles, out, opts, summary, stop, window, learner=None, log=None):
    taken = 0
    while not stop.is_set():
        want = opts.batch
        learning = learner is not None and learner.active
        if learning:  # a batch never straddles the end of learning
            want = min(want, learner.remaining)
        if opts.max_frames is not None:
            want = min(want, opts.max_frames - taken)
            if want <= 0:
                return
        frames, ended = cap.take(want)
        taken += len(frames)
        summary.dropped = cap.dropped
        if frames:
            _score(frames, inspector, profiles, out, opts, summary, window,
                   learner if learning else None)
        if learning and learner.remaining == 0:
            learner.finish(profiles, log)  # later batches use the re-loaded profiles
        if ended:
            return


def _score(frames, inspector, profiles, out, opts, summary, window, learner=None):
    good, images = [], []
    for f in frames:
        if f.image is None:
            summary.unreadable += 1
            rec = unreadable_record(f, summary.source)
            emit(out, rec)
            if opts.publish is not None:
                opts.publish.publish(rec, None, None, summary)
            continue
        good.append(f)
        images.append(prepare(f.image, opts.roi, opts.resize, opts.resize_mode))
    if not good:
        return
    t_in = time.monotonic()
    per_profile = {name: _inspect(inspector, images, p) for name, p in profiles.items()}
    t_done = time.monotonic()
    infer_ms = (t_done - t_in) * 1000 / len(good)
    for i, f in enumerate(good):
        results = {name: rs[i] for name, rs in per_profile.items()}
        total_ms = (t_done - f.t0) * 1000
        rec, worst = make_record(f, summary.source, results, (t_in - f.t0) * 1000, total_ms)
        summary.frames += 1
        summary.latency.add(total_ms)
        summary.inference.add(infer_ms)
        if learner is not None:  # presumed good: scored and shown, but no verdict
            learner.add(f.id, results)
            summary.learning += 1
            mark_learning(rec)
        elif rec["decision"] == "defect":
            summary.defects += 1
            if opts.save_defects is not None:
                rec["saved"] = save_defect(opts.save_defects, f, images[i], worst)
        emit(out, rec)
        if opts.publish is not None:
            opts.publish.publish(rec, worst, images[i], summary)
        if window:
            window.show(images[i], worst, rec, summary)
