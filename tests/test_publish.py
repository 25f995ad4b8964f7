"""The publisher fan-out: one failing output is reported once and left out; the others go on."""
from __future__ import annotations

from careg_edge.publish import Fanout


class Recorder:
    name = "recorder"

    def __init__(self):
        self.frames, self.closed = [], []

    def publish(self, record, result, image, summary):
        self.frames.append(record["frame"])

    def close(self, summary):
        self.closed.append(summary)


class Broken(Recorder):
    name = "broken"

    def publish(self, record, result, image, summary):
        if record["frame"] == 2:
            raise ConnectionError("peer went away")
        super().publish(record, result, image, summary)


def test_a_failing_publisher_is_dropped_and_the_others_keep_going():
    logs, ok, bad = [], Recorder(), Broken()
    fan = Fanout([bad, ok], log=logs.append)
    for i in range(5):
        fan.publish({"frame": i}, None, None, None)
    fan.close("summary")
    assert ok.frames == [0, 1, 2, 3, 4] and bad.frames == [0, 1]
    assert logs == ["broken: stopped publishing (ConnectionError: peer went away)"]
    assert ok.closed == ["summary"] and bad.closed == [None]  # closed once, when it failed
