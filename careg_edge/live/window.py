"""--show: a live window with the heatmap overlay, the decision and the frame rate."""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

from ..overlay import heatmap_overlay, put_label
from ..sources import _cv2


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


class Window:
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
