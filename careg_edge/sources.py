"""Frame sources (camera, stream, video, image folder) and the capture thread.

A camera keeps producing frames whether or not inference keeps up, so it is read
from its own thread into a bounded queue (see careg_edge/live/ for the road).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

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
