"""Progress on stderr for long commands (enroll, eval, train).

On a terminal: one line redrawn in place (carriage return) at most twice a
second. Anywhere else (a log file, a pipe, systemd's journal): a whole line every
`interval` seconds and one at the end, so logs hold readable lines rather than
one huge line of carriage returns. The interval is CAREG_PROGRESS_INTERVAL
seconds (default 10).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO

REDRAW_S = 0.5


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("CAREG_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0


class Progress:
    """done/total with rate and ETA; `update(n, what)`, `close()` (also a context manager)."""

    def __init__(self, total: int, label: str = "", enabled: bool = True,
                 stream: Optional[TextIO] = None, initial: int = 0,
                 interval: Optional[float] = None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.label = max(int(total), 1), int(initial), label
        self.enabled, self.what = enabled, ""
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = REDRAW_S if self.tty else (_interval() if interval is None else interval)
        self.t0 = self._last = time.monotonic()
        self._start, self._closed = int(initial), False

    def update(self, n: int = 1, what: str = "") -> None:
        self.done += n
        self.what = what or self.what
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every and self.done < self.total:
            self._last = now
            self._write(now)

    def close(self) -> None:
        if self.enabled and not self._closed:
            self._write(time.monotonic())
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def line(self, now: float) -> str:
        frac = min(self.done / self.total, 1.0)
        spent = now - self.t0
        rate = (self.done - self._start) / spent if spent > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        head = f"{self.label}: " if self.label else ""
        what = f" {self.what[:40]}" if self.what else ""
        return (f"{head}{100 * frac:5.1f}% {self.done}/{self.total}{what} "
                f"{rate:.2f}/s ETA {eta / 60:.1f} min")

    def _write(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            self.stream.write(f"\r{text:<100}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
