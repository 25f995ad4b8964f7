"""Live inspection: frame sources, a capture thread, one JSON line per frame, overlays.

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
import queue
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import CaregError, UserInputError


class SourceUnavailable(CaregError):
    """A camera/stream could not be opened, or was lost and did not come back."""

    exit_code = 3


# --------------------------------------------------------------------- sources
@dataclass
class Frame:
    id: int
    image: Optional[np.ndarray]   # RGB uint8 HxWx3; None when unreadable
    ts: float                     # wall clock (epoch s) at capture
    t0: float                     # monotonic at capture, for end-to-end latency
    name: str = ""                # file name for image folders
    error: str = ""


def _cv2():
    import cv2
    if not os.environ.get("CAREG_VERBOSE"):
        # OpenCV's own warnings ("can't open camera by index") would duplicate our message.
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        except AttributeError:
            pass
    return cv2


class Source:
    """read() -> (status, rgb|None, name); status is 'ok', 'bad' (unreadable frame) or 'end'."""

    live = False  # live sources drop frames under overload and reconnect when lost
    label = ""

    def open(self) -> bool:
        return True

    def read(self) -> Tuple[str, Optional[np.ndarray], str]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CvSource(Source):
    """Anything cv2.VideoCapture opens: a camera index, a video file, a stream URL."""

    def __init__(self, target, live: bool, label: str):
        self.target, self.live, self.label = target, live, label
        self.cap = None
        self._bad_run = 0

    def open(self) -> bool:
        cv2 = _cv2()
        self.close()
        self.cap = cv2.VideoCapture(self.target)
        if self.cap.isOpened():
            return True
        self.close()
        return False

    def read(self):
        cv2 = _cv2()
        ok, bgr = self.cap.read()
        if ok and bgr is not None:
            self._bad_run = 0
            return "ok", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ""
        if self.live:
            return "end", None, ""  # the capture thread decides whether to reconnect
        # A video file: a failed read before the last frame is a corrupt frame, not the end.
        pos = self.cap.get(cv2.CAP_PROP_POS_FRAMES)
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._bad_run += 1
        if count > 0 and pos < count - 1 and self._bad_run <= 25:
            self.cap.grab()
            return "bad", None, f"frame {int(pos)}: decoder returned no image"
        return "end", None, ""

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageSource(Source):
    def __init__(self, files: Sequence[Path], label: str):
        self.files, self.label, self.i = list(files), label, 0

    def read(self):
        from .imageio import read_image
        if self.i >= len(self.files):
            return "end", None, ""
        f = self.files[self.i]
        self.i += 1
        try:
            return "ok", read_image(f), f.name
        except UserInputError as e:
            return "bad", None, f"{f.name}: {e}"


def open_source(camera: Optional[int] = None, video: Optional[str] = None,
                images: Optional[str] = None, stream: Optional[str] = None) -> Source:
    """Exactly one of the four; errors name the option and the fix."""
    given = [(k, v) for k, v in (("--camera", camera), ("--video", video),
                                 ("--images", images), ("--stream", stream)) if v is not None]
    if len(given) != 1:
        raise UserInputError("give exactly one source: --camera N, --video FILE, "
                             "--images DIR|GLOB or --stream URL"
                             + (f" (got {', '.join(k for k, _ in given)})" if given else ""))
    if camera is not None:
        return CvSource(int(camera), live=True, label=f"camera:{camera}")
    if stream is not None:
        return CvSource(stream, live=True, label=f"stream:{stream}")
    if video is not None:
        if not Path(video).is_file():
            raise UserInputError(f"--video {video}: file not found")
        return CvSource(str(video), live=False, label=f"video:{Path(video).name}")
    from .imageio import list_images
    return ImageSource(list_images(images, what="--images"), label=f"images:{images}")


def open_with_retry(src: Source, reconnect_s: float, stop: threading.Event,
                    log=lambda m: None) -> None:
    """Open, retrying with exponential back-off (0.5 s .. 5 s) for reconnect_s seconds."""
    deadline, delay, tries = time.monotonic() + reconnect_s, 0.5, 0
    while True:
        tries += 1
        if src.open():
            return
        left = deadline - time.monotonic()
        if left <= 0 or stop.is_set():
            what = "could not be opened" if tries == 1 else f"could not be opened after {tries} tries"
            raise SourceUnavailable(
                f"{src.label}: {what} within --reconnect {reconnect_s:g} s; check the "
                f"cable/URL/index (`careg-edge info`, `ls /dev/video*`) or raise --reconnect")
        log(f"{src.label}: not available, retrying in {min(delay, left):.1f} s")
        stop.wait(min(delay, left))
        delay = min(delay * 2, 5.0)


# --------------------------------------------------------------------- capture
_END = object()


class Capture(threading.Thread):
    """Reads the source into a bounded queue; counts dropped and unreadable frames."""

    def __init__(self, src: Source, queue_size: int = 8, reconnect_s: float = 10.0,
                 log=lambda m: None):
        super().__init__(name="careg-capture", daemon=True)
        self.src, self.reconnect_s, self.log = src, reconnect_s, log
        self.q: "queue.Queue" = queue.Queue(maxsize=max(1, queue_size))
        self.stop_event = threading.Event()
        self.dropped = 0
        self.error: Optional[BaseException] = None
        self._next_id = 0

    def run(self):
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
        finally:
            self.src.close()
            self._put(_END)

    def _loop(self):
        while not self.stop_event.is_set():
            status, img, info = self.src.read()
            if status == "end":
                if not self.src.live:
                    return
                self.log(f"{self.src.label}: lost, reconnecting for up to {self.reconnect_s:g} s")
                open_with_retry(self.src, self.reconnect_s, self.stop_event, self.log)
                continue
            f = Frame(self._next_id, img, time.time(), time.monotonic(),
                      name=info if status == "ok" else "", error=info if status == "bad" else "")
            if status == "bad" and isinstance(self.src, ImageSource):
                f.name = info.split(":", 1)[0]
            self._next_id += 1
            self._put(f)

    def _put(self, item):
        if self.src.live and item is not _END:
            while True:
                try:
                    self.q.put_nowait(item)
                    return
                except queue.Full:
                    try:  # latest frame wins: drop the oldest queued one
                        self.q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        while True:  # file sources (and the end marker) block, but never forever
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.stop_event.is_set():  # nobody reads any more (end marker included)
                    return

    def take(self, n: int, timeout: float = 0.2) -> Tuple[List[Frame], bool]:
        """Up to n frames; waits for the first. Returns (frames, ended)."""
        out: List[Frame] = []
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return out, False
        while True:
            if item is _END:
                return out, True
            out.append(item)
            if len(out) >= n:
                return out, False
            try:  # live: don't wait to fill a batch; files: batches stay full
                item = self.q.get_nowait() if self.src.live else self.q.get(timeout=timeout)
            except queue.Empty:
                return out, False

    def stop(self):
        self.stop_event.set()


# --------------------------------------------------------------------- frames in
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
                "interrupted": self.interrupted}

    def text(self) -> str:
        d = self.to_dict()
        fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
        return (f"{d['source']}: {d['frames']} frames, {d['defects']} defects, "
                f"{d['dropped']} dropped, {d['unreadable']} unreadable in {d['elapsed_s']:.1f} s "
                f"({d['fps']:.1f} FPS); latency p50 {fmt(d['latency_ms_p50'])} ms, "
                f"p99 {fmt(d['latency_ms_p99'])} ms (inference p50 "
                f"{fmt(d['inference_ms_p50'])} ms)" + (" [interrupted]" if self.interrupted else ""))


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
        "decision": {"enum": ["ok", "defect", "unreadable"]},
        "error": {"type": "string"},            # unreadable frames only
        "latency_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "profiles": {"type": "array", "items": {
            "type": "object", "required": ["profile", "score", "threshold", "decision"],
            "additionalProperties": False,
            "properties": {"profile": {"type": "string"}, "score": {"type": "number"},
                           "threshold": {"type": "number"},
                           "decision": {"enum": ["ok", "defect"]}}}},
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
        for k, v in (getattr(r, "timings", None) or {}).items():
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
def heatmap_overlay(rgb: np.ndarray, anomaly_map: np.ndarray, threshold: float,
                    mask: Optional[np.ndarray] = None, alpha: float = 0.45) -> np.ndarray:
    """BGR image: the frame with the anomaly map blended on top and the mask outlined.

    Colours are fixed relative to the threshold (threshold = middle of the colour
    scale), so the same colour means the same thing on every frame and every line.
    """
    cv2 = _cv2()
    H, W = rgb.shape[:2]
    amap = np.asarray(anomaly_map, np.float32)
    if amap.shape != (H, W):
        amap = cv2.resize(amap, (W, H), interpolation=cv2.INTER_LINEAR)
    scale = 2.0 * threshold if threshold > 0 else max(float(amap.max()), 1e-6)
    u8 = np.clip(amap / scale * 255.0, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(u8, cv2.COLORMAP_JET)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    out = cv2.addWeighted(bgr, 1 - alpha, heat, alpha, 0)
    if mask is not None and np.any(mask):
        m = np.asarray(mask).astype(np.uint8)
        if m.shape != (H, W):
            m = cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), max(1, W // 200))
    return out


def put_label(bgr: np.ndarray, text: str, defect: bool) -> np.ndarray:
    cv2 = _cv2()
    scale = max(0.35, bgr.shape[1] / 900)
    colour = (0, 0, 255) if defect else (0, 200, 0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(bgr, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(bgr, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return bgr


def _write_png(path: Path, img: np.ndarray) -> None:
    # Temp file + rename: a consumer watching the folder never sees half a PNG.
    cv2 = _cv2()
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise UserInputError(f"{path}: could not encode PNG")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def save_defect(out_dir: Path, frame: Frame, rgb: np.ndarray, result) -> List[str]:
    """frame PNG, heatmap overlay PNG and mask PNG (0/255) for one failing frame."""
    cv2 = _cv2()
    stamp = datetime.fromtimestamp(frame.ts, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    stem = f"{stamp}_f{frame.id:06d}" + (f"_{Path(frame.name).stem}" if frame.name else "")
    mask = np.asarray(result.mask).astype(bool) if result.mask is not None else \
        np.asarray(result.anomaly_map) >= float(result.threshold)
    paths = [out_dir / f"{stem}_frame.png", out_dir / f"{stem}_overlay.png", out_dir / f"{stem}_mask.png"]
    _write_png(paths[0], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    over = heatmap_overlay(rgb, result.anomaly_map, float(result.threshold), mask)
    _write_png(paths[1], put_label(over, f"DEFECT {float(result.score):.3g} > {float(result.threshold):.3g}", True))
    _write_png(paths[2], mask.astype(np.uint8) * 255)
    return [str(p) for p in paths]


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
    if len(images) == 1 or not hasattr(inspector, "inspect_batch"):
        return [inspector.inspect(im, profile) for im in images]
    return list(inspector.inspect_batch(images, profile))


def run_live(src: Source, inspector, profiles: Dict[str, object], out, opts: LiveOptions,
             log=lambda m: None) -> Summary:
    """Score every frame the source yields; one JSON line each to `out`.

    `profiles` maps a display name to a loaded Profile. The source must not be
    open yet: it is opened here (with retries) so errors come before any output.
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
            _loop(cap, inspector, profiles, out, opts, summary, stop, window)
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
    return summary


def _silence_stdout(out) -> None:
    if out is sys.stdout:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def _loop(cap, inspector, profiles, out, opts, summary, stop, window):
    taken = 0
    while not stop.is_set():
        want = opts.batch
        if opts.max_frames is not None:
            want = min(want, opts.max_frames - taken)
            if want <= 0:
                return
        frames, ended = cap.take(want)
        taken += len(frames)
        summary.dropped = cap.dropped
        if frames:
            _score(frames, inspector, profiles, out, opts, summary, window)
        if ended:
            return


def _score(frames, inspector, profiles, out, opts, summary, window):
    good, images = [], []
    for f in frames:
        if f.image is None:
            summary.unreadable += 1
            _emit(out, unreadable_record(f, summary.source))
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
        if rec["decision"] == "defect":
            summary.defects += 1
            if opts.save_defects is not None:
                rec["saved"] = save_defect(opts.save_defects, f, images[i], worst)
        _emit(out, rec)
        if window:
            window.show(images[i], worst, rec, summary)


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
