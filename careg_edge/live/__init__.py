"""Live inspection: frames from a camera, stream, video or image folder to JSON lines.

The road of a frame:  source (camera | stream | video | images)
  -> Capture thread -> bounded queue -> main loop: ROI/resize -> Inspector.inspect_batch
  -> JSON line (+ defect files, + window) -> Summary.

Why a thread and a bounded queue: a camera keeps producing frames whether or not
inference keeps up. Reading it from its own thread means the driver buffer never
fills (which on many cameras stalls or returns stale frames); when inference falls
behind, live sources drop the *oldest* queued frame (latest frame wins, every
drop is counted), while file sources block instead so that every frame is scored.

    careg_edge/sources.py   sources, the capture thread and its dropping queue
    live/frame_prep.py      --roi / --resize of a frame before the inspector
    live/loop.py            run_live: the loop, batching, Ctrl-C, the learn phase hook
    live/records.py         the per-frame JSON record, its schema, the run's Summary
    live/window.py          --show
    careg_edge/overlay.py   heatmap overlay and --save-defects files

The names below are re-exported because `careg_edge.live` is what the CLI, the
serve line and users import.
"""
from ..overlay import heatmap_overlay, put_label, save_defect
from ..sources import (
    Capture, CvSource, Frame, ImageSource, Source, SourceUnavailable, open_source,
    open_with_retry)
from .frame_prep import parse_roi, parse_size, prepare
from .loop import LiveOptions, run_live
from .records import (
    RECORD_SCHEMA, LatencyHistogram, Summary, iso, make_record, unreadable_record)
from .window import Window, display_problem

__all__ = [
    "Capture", "CvSource", "Frame", "ImageSource", "LatencyHistogram", "LiveOptions",
    "RECORD_SCHEMA", "Source", "SourceUnavailable", "Summary", "Window", "display_problem",
    "heatmap_overlay", "iso", "make_record", "open_source", "open_with_retry", "parse_roi",
    "parse_size", "prepare", "put_label", "run_live", "save_defect", "unreadable_record"]
