"""What a live run writes: one JSON line per frame (its schema and builders) and the
end-of-run summary with latency percentiles in constant memory."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Optional, Tuple

import numpy as np

from ..sources import Frame


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


def mark_learning(rec: dict) -> None:
    rec["decision"] = "learning"
    for p in rec["profiles"]:
        p["decision"] = "learning"


def emit(out, rec: dict) -> None:
    out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    out.flush()  # a line consumer (PLC bridge, tail -f) sees each frame at once
