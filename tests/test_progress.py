"""Progress on a terminal redraws one line; into a log it writes whole lines,
one per interval plus the last, and never a carriage return."""
import io

import pytest

from careg_edge import progress as progress_mod
from careg_edge.progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    return c


def test_log_file_gets_one_line_per_interval_and_no_carriage_return(clock):
    out = io.StringIO()
    with Progress(100, "eval", stream=out, interval=5.0) as bar:
        for i in range(100):          # 100 steps, 0.2 s apart: 20 s in all
            clock.t += 0.2
            bar.update(1, f"item {i}")
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3 + 1, lines          # at 5, 10, 15 s, then the final line at 20 s
    assert lines[0].startswith("eval:") and "/100" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("eval: 100.0% 100/100")


def test_interval_from_environment(clock, monkeypatch):
    monkeypatch.setenv("CAREG_PROGRESS_INTERVAL", "2")
    out = io.StringIO()
    with Progress(10, stream=out) as bar:
        for _ in range(10):
            clock.t += 1.0
            bar.update()
    assert len(out.getvalue().splitlines()) == 4 + 1   # at 2, 4, 6, 8 s, then the end


def test_terminal_redraws_in_place(clock):
    out = Tty()
    with Progress(10, "enrolling", stream=out) as bar:
        for _ in range(10):
            clock.t += 1.0
            bar.update()
    text = out.getvalue()
    assert text.count("\r") >= 9 and text.count("\n") == 1 and text.endswith("\n")


def test_disabled_writes_nothing(clock):
    out = io.StringIO()
    with Progress(10, stream=out, enabled=False) as bar:
        clock.t += 60
        bar.update(5)
    assert out.getvalue() == ""
