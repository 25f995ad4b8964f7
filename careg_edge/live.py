"""Live inspection: the capture-to-JSON loop, ROI/resize, records, summary, window.

The road of a frame:  source (camera | stream | video | images)
  -> Capture thread -> bounded queue -> main loop: ROI/resize -> Inspector.inspect_batch
  -> JSON line (+ defect files, + window) -> Summary.

Why a thread and a bounded queue: a camera keeps producing frames whether or not
inference keeps up. Reading it from its own thread means the driver buffer never
fills (which on many cameras stalls or returns stale frames); when inference falls
behind, live sources drop the *oldest* queued frame (latest frame wins, every
drop is counted), while file sources block instead so that every frame is scored.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import UserInputError


# Sources and overlays live in their own modules; names are re-exported here because
# `live` is what the CLI and users import.
from .sources import (  # noqa: F401
    Capture, CvSource, Frame, ImageSource, Source, SourceUnavailable, _cv2, open_source,
    open_with_retry)
from .overlay import heatmap_overlay, put_label, save_defect  # noqa: F401


def parse_roi(text: Optional[str]) -> Optional[Tuple[int, int, int, int]]:
    """'x,y,w,h' in pixels of the source frame."""
    if not text:
        return None
    try:
        x, y, w, h = (int(v) for v in str(text).split(","))
    except ValueError:
        raise UserInputError(f"--roi {text}: expected x,y,w,h in pixels, e.g. --roi 100,50,640,480") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise UserInputError(f"--roi {text}: x,y must be >= 0 and w,h > 0")
    return x, y, w, h


def parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'WxH' -> (W, H)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    raise UserInputError(f"--resize {text}: expected WxH in pixels, e.g. --resize 640x480")


def prepare(img: np.ndarray, roi=None, size=None, mode: str = "stretch") -> np.ndarray:
    """Crop the region of interest, then resize by policy (stretch | letterbox | crop)."""
    if roi is not None:
        x, y, w, h = roi
        H, W = img.shape[:2]
        if x + w > W or y + h > H:
            raise UserInputError(f"--roi {x},{y},{w},{h}: outside the {W}x{H} frame")
        img = img[y:y + h, x:x + w]
    if size is None:
        return np.ascontiguousarray(img)
    cv2 = _cv2()
    tw, th = size
    H, W = img.shape[:2]
    if mode == "stretch":
        return cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
    s = min(tw / W, th / H) if mode == "letterbox" else max(tw / W, th / H)
    nw, nh = max(1, round(W * s)), max(1, round(H * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    if mode == "crop":
        x0, y0 = (nw - tw) // 2, (nh - th) // 2
        return np.ascontiguousarray(r[y0:y0 + th, x0:x0 + tw])
    out = np.zeros((th, tw, 3), np.uint8)  # letterbox: black bars, image centred
    x0, y0 = (tw - nw) // 2, (th - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = r
    return out


# --------------------------------------------------------------------- stats
class LatencyHistogram:
    """Percentiles over an unbounded run in constant memory: log bins, 1 % wide."""

    LO, GROWTH, BINS = 0.01, 1.01, 2500  # 0.01 ms .. ~6.6e8 ms

    def __init__(self):
        self.counts = np.zeros(self.BINS, np.int64)
        self.n = 0

    def add(self, ms: float) -> None:
        i = 0 if ms <= self.LO else int(math.log(ms / self.LO) / math.log(self.GROWTH)) + 1
        self.counts[min(i, self.BINS - 1)] += 1
        self.n += 1

    def percentile(self, q: float) -> float:
        if self.n == 0:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.n)))
        # geometric centre of the bin: relative error <= 0.5 %
        return self.LO if i == 0 else self.LO * self.GROWTH ** (i - 0.5)


@dataclass
class Summary:
    source: str = ""
    frames: int = 0          # frames scored
    defects: int = 0
    dropped: int = 0         # discarded by the capture thread because inference lagged
    unreadable: int = 0
    learning: int = 0        # of `frames`: presumed good (run --learn), no verdict counted
    elapsed_s: float = 0.0
    interrupted: bool = False
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)   # capture -> result
    inference: LatencyHistogram = field(default_factory=LatencyHistogram)  # inspector only
    error: Optional[BaseException] = None

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        r = lambda v: None if math.isnan(v) else round(v, 2)  # noqa: E731
        return {"summary": True, "source": self.source, "frames": self.frames,
                "defects": self.defects, "dropped": self.dropped, "unreadable": self.unreadable,
                "elapsed_s": round(self.elapsed_s, 3), "fps": round(self.fps, 2),
                "latency_ms_p50": r(self.latency.percentile(50)),
                "latency_ms_p99": r(self.latency.percentile(99)),
                "inference_ms_p50": r(self.inference.percentile(50)),
                "inference_ms_p99": r(self.inference.percentile(99)),
                "learning": self.learning, "interrupted": self.interrupted}

    def text(self) -> str:
        d = self.to_dict()
        fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
        return (f"{d['source']}: {d['frames']} frames, {d['defects']} defects, "
                f"{d['dropped']} dropped, {d['unreadable']} unreadable in {d['elapsed_s']:.1f} s "
                f"({d['fps']:.1f} FPS); latency p50 {fmt(d['latency_ms_p50'])} ms, "
                f"p99 {fmt(d['latency_ms_p99'])} ms (inference p50 "
                f"{fmt(d['inference_ms_p50'])} ms)"
                + (f"; {self.learning} learning" if self.learning else "")
                + (" [interrupted]" if self.interrupted else ""))


# --------------------------------------------------------------------- records
RECORD_SCHEMA = {  # JSON Schema of one line; docs/cli.md shows examples
    "type": "object",
    "required": ["ts", "source", "frame", "decision"],
    "additionalProperties": False,
    "properties": {
        "ts": {"type": "string"},               # ISO 8601 UTC capture time, ms
        "source": {"type": "string"},           # camera:0 | video:x.mp4 | images:dir | stream:url
        "frame": {"type": "integer", "minimum": 0},
        "name": {"type": "string"},             # file name (image folders)
        "score": {"type": "number"},            # worst profile's score
        "threshold": {"type": "number"},        # ... and its threshold
        # "learning": one of the first N frames of `run --learn N` (presumed good)
        "decision": {"enum": ["ok", "defect", "unreadable", "learning"]},
        "error": {"type": "string"},            # unreadable frames only
        "latency_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "profiles": {"type": "array", "items": {
            "type": "object", "required": ["profile", "score", "threshold", "decision"],
            "additionalProperties": False,
            "properties": {"profile": {"type": "string"}, "score": {"type": "number"},
                           "threshold": {"type": "number"},
                           "decision": {"enum": ["ok", "defect", "learning"]}}}},
        "saved": {"type": "array", "items": {"type": "string"}},
    },
}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _margin(r) -> float:
    # Which profile is "worst": the one whose score is furthest above its threshold.
    t = float(r.threshold)
    return float(r.score) / t if t > 0 else float(r.score) - t


def make_record(frame: Frame, source: str, results: Dict[str, object], queue_ms: float,
                total_ms: float) -> Tuple[dict, object]:
    """One JSON line for a scored frame, and the worst profile's Result."""
    worst_name = max(results, key=lambda k: _margin(results[k]))
    worst = results[worst_name]
    lat = {"queue": round(queue_ms, 3)}
    for r in results.values():  # stages summed over profiles (they run one after another)
        for k, v in r.timings.items():
            lat[k] = round(lat.get(k, 0.0) + float(v), 3)
    lat["total"] = round(total_ms, 3)
    rec = {"ts": iso(frame.ts), "source": source, "frame": frame.id}
    if frame.name:
        rec["name"] = frame.name
    rec.update({"score": round(float(worst.score), 6), "threshold": round(float(worst.threshold), 6),
                "decision": "defect" if any(bool(r.is_defect) for r in results.values()) else "ok",
                "latency_ms": lat,
                "profiles": [{"profile": k, "score": round(float(r.score), 6),
                              "threshold": round(float(r.threshold), 6),
                              "decision": "defect" if r.is_defect else "ok"}
                             for k, r in results.items()]})
    return rec, worst


def unreadable_record(frame: Frame, source: str) -> dict:
    rec = {"ts": iso(frame.ts), "source": source, "frame": frame.id}
    if frame.name:
        rec["name"] = frame.name
    rec.update({"decision": "unreadable", "error": frame.error or "unreadable frame"})
    return rec


# --------------------------------------------------------------------- overlays
def display_problem() -> Optional[str]:
    """None when a window can be opened, else the reason (headless build, no display)."""
    cv2 = _cv2()
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY/WAYLAND_DISPLAY unset)"
    try:
        cv2.namedWindow("careg-edge", cv2.WINDOW_NORMAL)
    except cv2.error:
        return "this OpenCV build has no GUI (opencv-python-headless); pip install opencv-python"
    return None


# --------------------------------------------------------------------- the loop
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
    window = _Window(log) if opts.show else None
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
            _emit(out, rec)
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
            _mark_learning(rec)
        elif rec["decision"] == "defect":
            summary.defects += 1
            if opts.save_defects is not None:
                rec["saved"] = save_defect(opts.save_defects, f, images[i], worst)
        _emit(out, rec)
        if opts.publish is not None:
            opts.publish.publish(rec, worst, images[i], summary)
        if window:
            window.show(images[i], worst, rec, summary)


def _mark_learning(rec: dict) -> None:
    rec["decision"] = "learning"
    for p in rec["profiles"]:
        p["decision"] = "learning"


def _emit(out, rec: dict) -> None:
    out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    out.flush()  # a line consumer (PLC bridge, tail -f) sees each frame at once


class _Window:
    """--show: live window with overlay, decision and FPS; degrades to a message."""

    def __init__(self, log):
        self.problem = display_problem()
        if self.problem:
            log(f"--show: cannot open a window: {self.problem}; continuing without it")
        self.t_last, self.fps = time.monotonic(), 0.0

    def show(self, rgb, result, rec, summary):
        if self.problem:
            return
        cv2 = _cv2()
        now = time.monotonic()
        self.fps = 0.9 * self.fps + 0.1 / max(now - self.t_last, 1e-6)
        self.t_last = now
        img = heatmap_overlay(rgb, result.anomaly_map, float(result.threshold), result.mask)
        put_label(img, f"{rec['decision'].upper()} {rec['score']:.3g}/{rec['threshold']:.3g} "
                       f"{self.fps:.1f} FPS  dropped {summary.dropped}", rec["decision"] == "defect")
        cv2.imshow("careg-edge", img)
        cv2.waitKey(1)

    def close(self):
        if not self.problem:
            _cv2().destroyAllWindows()
