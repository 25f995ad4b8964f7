"""`run --web [HOST]:PORT`: a live page with the latest frames, their heatmaps and verdicts.

Routes (GET/HEAD only; anything else is 404 or 405):
    /                  the page (careg_edge/web/index.html)
    /state             JSON: counters, rates, latency percentiles, threshold, latest frames
    /events            Server-Sent Events: the same JSON, pushed at most 10 times a second
    /frame/<id>.jpg    one of the latest frames with its heatmap overlay
Only the files that careg_edge/web/ holds when the server starts can be served, by
exact name: a request path never reaches the file system.

Why JPEGs are made on request: the inspection thread only keeps references to the
newest frames; the overlay and JPEG cost is paid by the HTTP thread, and only when
a browser asks, so an open page does not slow the line down by more than a lock.
"""
from __future__ import annotations

import collections
import json
import math
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .errors import UserInputError

STATIC = Path(__file__).with_name("web")
KEEP_FRAMES = 6        # frames shown on the page
KEEP_SCORES = 120      # score history for the sparkline
MAX_STREAMS = 16       # open /events connections; a page needs one
PUSH_EVERY_S = 0.1     # at most 10 updates a second per page, however fast the line runs
MAX_WIDTH = 480        # frames are scaled down to this width for the page
_FRAME = re.compile(r"^/frame/(\d{1,12})\.jpg$")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


def _num(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else round(float(v), 3)


class LiveState:
    """What the page shows; written by the inspection thread, read by HTTP threads."""

    def __init__(self, line: str, product: str):
        self.line, self.product = line, product
        self.cond = threading.Condition()
        self.version = 0
        self.frames = collections.deque(maxlen=KEEP_FRAMES)  # dicts: record, image, result, jpeg
        self.scores = collections.deque(maxlen=KEEP_SCORES)
        self.times = collections.deque()                     # monotonic times of the last 5 s
        self.counters = {"frames": 0, "defects": 0, "unreadable": 0, "dropped": 0}
        self.latency = {"p50": None, "p99": None, "inference_p50": None}
        self.threshold = None
        self.health = "starting"
        self.t_start = time.monotonic()

    def add(self, record, result, image, summary) -> None:
        now = time.monotonic()
        with self.cond:
            self.times.append(now)
            while self.times[0] < now - 5.0:
                self.times.popleft()
            if "score" in record:
                self.scores.append([record["frame"], record["score"], record["decision"]])
                self.threshold = record["threshold"]
            self.frames.appendleft({"record": record, "image": image, "result": result, "jpeg": None})
            if summary is not None:
                self.counters = {"frames": summary.frames, "defects": summary.defects,
                                 "unreadable": summary.unreadable, "dropped": summary.dropped}
                self.latency = {"p50": _num(summary.latency.percentile(50)),
                                "p99": _num(summary.latency.percentile(99)),
                                "inference_p50": _num(summary.inference.percentile(50))}
            self.health = "running"
            self.version += 1
            self.cond.notify_all()

    def set_health(self, health: str) -> None:
        with self.cond:
            self.health = health
            self.version += 1
            self.cond.notify_all()

    def snapshot(self) -> dict:
        with self.cond:
            span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
            return {"line": self.line, "product": self.product, "version": self.version,
                    "health": self.health, "threshold": self.threshold, **self.counters,
                    "fps": round((len(self.times) - 1) / span, 2) if span > 0 else 0.0,
                    "latency_ms": self.latency,
                    "uptime_s": round(time.monotonic() - self.t_start, 1),
                    "frames_shown": [dict(f["record"], has_image=f["image"] is not None)
                                     for f in self.frames],
                    "scores": list(self.scores)}

    def jpeg(self, frame_id: int):
        with self.cond:
            f = next((f for f in self.frames if f["record"]["frame"] == frame_id), None)
        if f is None or f["image"] is None:
            return None
        if f["jpeg"] is None:  # made once per frame, by whichever HTTP thread asks first
            f["jpeg"] = _encode(f["image"], f["result"])
        return f["jpeg"]


def _encode(rgb, result) -> bytes:
    from .overlay import heatmap_overlay
    from .sources import _cv2
    cv2 = _cv2()
    if result is not None and getattr(result, "anomaly_map", None) is not None:
        bgr = heatmap_overlay(rgb, result.anomaly_map, float(result.threshold), getattr(result, "mask", None))
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    if w > MAX_WIDTH:
        bgr = cv2.resize(bgr, (MAX_WIDTH, max(1, round(h * MAX_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "careg-edge"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # the run's stderr is for the run, not for page loads
        pass

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        view = self.server.view
        path = self.path.split("?", 1)[0]
        if len(self.path) > 256:
            return self._send(HTTPStatus.REQUEST_URI_TOO_LONG, b"path too long\n", "text/plain")
        if path == "/events":
            return self._events(view)
        if path == "/state":
            return self._send(HTTPStatus.OK, json.dumps(view.state.snapshot()).encode(), "application/json")
        m = _FRAME.match(path)
        if m:
            data = view.state.jpeg(int(m.group(1)))
            if data is None:
                return self._send(HTTPStatus.NOT_FOUND, b"frame no longer kept\n", "text/plain")
            return self._send(HTTPStatus.OK, data, "image/jpeg", cache=True)
        name = "index.html" if path == "/" else path[1:]
        if name in view.files:  # exact names listed at start-up: no path ever joins a request
            body = view.files[name]
            return self._send(HTTPStatus.OK, body, _TYPES.get(Path(name).suffix, "application/octet-stream"))
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def do_POST(self):
        self.close_connection = True  # its body is never read: it must not be taken for a request
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _send(self, status, body: bytes, ctype: str, cache=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _events(self, view):
        if not view.streams.acquire(blocking=False):
            return self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many live views\n", "text/plain")
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.close_connection = True
            seen = -1
            while not view.stopping.is_set():
                with view.state.cond:
                    if view.state.version == seen:
                        view.state.cond.wait(timeout=15)
                    changed = view.state.version != seen
                if changed:
                    snap = view.state.snapshot()
                    seen = snap["version"]
                    self.wfile.write(b"data: " + json.dumps(snap).encode() + b"\n\n")
                elif not view.stopping.is_set():
                    self.wfile.write(b": keep-alive\n\n")  # proxies close silent connections
                self.wfile.flush()
                view.stopping.wait(PUSH_EVERY_S)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the page was closed
        finally:
            view.streams.release()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class WebView:
    name = "web"

    def __init__(self, host: str, port: int, line: str, product: str, log=lambda m: None):
        self.state = LiveState(line, product)
        self.stopping = threading.Event()
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.files = {p.name: p.read_bytes() for p in STATIC.iterdir() if p.is_file()}
        try:
            self.httpd = _Server((host, port), _Handler)
        except OSError as e:
            raise UserInputError(f"--web {host}:{port}: cannot listen there ({e.strerror or e}); "
                                 f"pick another port or host") from None
        self.httpd.view = self
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="careg-web", daemon=True)
        self._thread.start()
        log(f"web: live view on http://{host}:{self.port}/")

    def publish(self, record, result, image, summary) -> None:
        self.state.add(record, result, image, summary)

    def close(self, summary) -> None:
        lost = summary is not None and summary.error is not None
        self.state.set_health("source lost" if lost else "stopped")
        self.stopping.set()
        with self.state.cond:
            self.state.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
