"""`careg-edge run`: inspect a camera, stream, video or image folder; one JSON line per frame."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UserInputError


def load_profiles(paths):
    """name -> Profile; names are file names unless two profiles share one."""
    from .. import Profile
    if not paths:
        raise UserInputError("--profile: give at least one profile (.careg from `careg-edge enroll`)")
    profiles = {}
    names = [Path(p).name for p in paths]
    for p, name in zip(paths, names):
        if not Path(p).is_file():
            raise UserInputError(f"--profile {p}: file not found")
        profiles[name if names.count(name) == 1 else str(p)] = Profile.load(p)
    return profiles


def check_profiles(profiles, insp) -> None:
    """Refuse mismatched profiles (encoder, input size) before any camera is opened."""
    for p in profiles.values():
        insp.check(p)


def _open_out(jsonl):
    if jsonl is None or str(jsonl) == "-":
        return sys.stdout, False
    try:  # append: a line's log outlives one run and is never truncated
        return open(jsonl, "a", encoding="utf-8", buffering=1), True
    except OSError as e:
        raise UserInputError(f"--jsonl {jsonl}: cannot open for writing ({e.strerror})") from None


EPILOG = """\b
Examples:
  careg-edge run --profile part.careg --camera 0 --jsonl line3.jsonl --save-defects defects/
  careg-edge run --profile part.careg --video shift2.mp4 --roi 100,40,800,800 --max-frames 500
  careg-edge run --profile a.careg --profile b.careg --images 'batch7/*.png' --batch 8
  careg-edge run --profile part.careg --camera 0 --learn 200 --target-fpr 0.01
  careg-edge run --profile part.careg --camera 0 --line L3 --mqtt broker:1883 --opcua :4840 --web :8080
  careg-edge run --server http://127.0.0.1:8000 --product part --images 'batch7/*.png' --batch 8
"""


@click.command("run", epilog=EPILOG)
@click.option("--profile", "profiles", multiple=True, type=click.Path(dir_okay=False),
              help="Profile(s) from `careg-edge enroll` (repeat for several; a frame fails "
                   "if any profile fails).")
@click.option("--camera", type=click.IntRange(min=0), default=None, metavar="N", help="Camera index (V4L2/DirectShow).")
@click.option("--video", type=click.Path(dir_okay=False), default=None, help="Video file.")
@click.option("--images", default=None, metavar="DIR|GLOB", help="Image folder or quoted glob.")
@click.option("--stream", default=None, metavar="URL", help="RTSP/HTTP/GStreamer URL (anything OpenCV opens).")
@click.option("--model", default=None, metavar="PATH",
              help="Encoder the profiles were enrolled with (default: the bundled one).")
@click.option("--roi", default=None, metavar="X,Y,W,H", help="Region of interest in source pixels, cropped first.")
@click.option("--resize", default=None, metavar="WxH", help="Resize the (cropped) frame before inspection.")
@click.option("--resize-mode", type=click.Choice(["stretch", "letterbox", "crop"]), default="stretch",
              show_default=True, help="How --resize treats a different aspect ratio.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Frames per inference call (live sources never wait to fill a batch).")
@click.option("--jsonl", default=None, metavar="FILE", help="Append JSON lines here instead of stdout.")
@click.option("--save-defects", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="For every failing frame write frame, heatmap overlay and mask PNGs here.")
@click.option("--show", is_flag=True, help="Live window with overlay and FPS (needs a display).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--queue", "queue_size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Frames buffered between capture and inference; older ones are dropped on live sources.")
@click.option("--reconnect", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to keep retrying a camera/stream that cannot be opened or is lost.")
@click.option("--learn", type=click.IntRange(min=1), default=None, metavar="N",
              help="Treat the first N readable frames as good parts (a few defects among them are "
                   "rejected), set each profile's threshold from them, write it (with history) "
                   "and go on inspecting. See docs/recalibration.md.")
@click.option("--target-fpr", type=float, default=None,
              help="False-alarm rate on good parts that --learn aims at [default: 0.01].")
@click.option("--mqtt", default=None, metavar="HOST[:PORT]",
              help="Publish each verdict to this MQTT broker (topic careg/LINE/PRODUCT/verdict, "
                   "QoS 1, retained; queued while the broker is away). See docs/line-outputs.md.")
@click.option("--mqtt-queue", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Verdicts held while the broker is unreachable; the oldest go first.")
@click.option("--opcua", default=None, metavar="[HOST]:PORT",
              help="Serve the latest verdict, score, counters and health as OPC UA variables "
                   "(binds to localhost unless HOST is given).")
@click.option("--web", default=None, metavar="[HOST]:PORT",
              help="Live view in a browser: latest frames with heatmaps, rates, latency "
                   "(binds to localhost unless HOST is given).")
@click.option("--line", default=None, metavar="NAME", help="Line name for --mqtt/--opcua/--web [default: line1].")
@click.option("--product", default=None, metavar="NAME",
              help="Product name for --mqtt/--opcua/--web [default: the first profile's file stem]; "
                   "with --server, the profile the server scores against.")
@click.option("--server", default=None, metavar="URL",
              help="Send the frames to a `careg-edge serve` server (http://HOST:PORT) instead of "
                   "inspecting here; needs --product, no --profile. See docs/serving.md.")
def command(profiles, camera, video, images, stream, model, roi, resize, resize_mode, batch,
            jsonl, save_defects, show, max_frames, queue_size, reconnect, learn, target_fpr,
            mqtt, mqtt_queue, opcua, web, line, product, server):
    """Inspect frames live and print one JSON line per frame.

    Each line holds the capture time, source, frame id, score, threshold,
    decision and latency per stage. Ctrl-C prints a summary (frames, defects,
    dropped, unreadable, FPS, p50/p99 latency) and exits 0. A camera that cannot
    be opened, or is lost and does not come back within --reconnect seconds,
    ends the run with exit code 3. With --learn N the first N frames set the
    threshold (lines marked "learning") and the run exits 2 if it could not.
    """
    from ..cli_context import make_inspector, settings
    from ..live import LiveOptions, open_source, parse_roi, parse_size, run_live

    s = settings()
    src = open_source(camera=camera, video=video, images=images, stream=stream)
    opts = LiveOptions(batch=batch, roi=parse_roi(roi), resize=parse_size(resize),
                       resize_mode=resize_mode, save_defects=save_defects, show=show,
                       max_frames=max_frames, queue_size=queue_size, reconnect_s=reconnect)
    learner = make_learner(learn, target_fpr, max_frames, src.label)
    if server is not None:
        loaded, insp = remote(server, product, profiles, learn, reconnect)
    else:
        loaded = load_profiles(profiles)
        insp = make_inspector(model)
        check_profiles(loaded, insp)
    out, close = _open_out(jsonl)
    summary = None
    try:
        opts.publish = line_outputs(mqtt, mqtt_queue, opcua, web, line, product, profiles, s.info,
                                    remote=server is not None)
        s.info(f"inspecting {src.label} with {', '.join(loaded)} (Ctrl-C to stop)"
               + (f"; learning the threshold from the first {learn} frames" if learner else ""))
        summary = run_live(src, insp, loaded, out, opts, log=s.info, learner=learner)
    finally:
        if close:
            out.close()
        if opts.publish is not None:
            opts.publish.close(summary)
    click.echo(summary.text(), err=True)
    if summary.error is not None:
        raise summary.error
    if learner is not None and learner.problem:
        from ..recalibrate import LearningIncomplete
        raise LearningIncomplete(learner.problem)
    return 0


def remote(server, product, profiles, learn, wait_s):
    """--server: the server scores; `loaded` maps the product to its name. A server not
    ready within --reconnect seconds ends the run (exit 3)."""
    if profiles or learn is not None or product is None:
        raise UserInputError("--server: give --product NAME (the server's profile) and no "
                             "--profile or --learn")
    from ..serve.client import RemoteInspector
    return {product: product}, RemoteInspector(server, product, wait_s=wait_s)


def line_outputs(mqtt, mqtt_queue, opcua, web, line, product, profiles, log, remote=False):
    """The publishers that send verdicts to the line (None when none was asked for)."""
    if not (mqtt or opcua or web):
        for name, v in (("--line", line), ("--product", None if remote else product)):
            if v is not None:
                raise UserInputError(f"{name}: only used with --mqtt, --opcua or --web")
        return None
    from ..publish import open_publishers
    return open_publishers(mqtt=mqtt, opcua=opcua, web=web, line=line or "line1",
                           product=product or Path(profiles[0]).stem, mqtt_queue=mqtt_queue, log=log)


def make_learner(learn, target_fpr, max_frames, label):
    """The --learn phase, refused up front when it cannot end in a threshold."""
    if learn is None:
        if target_fpr is not None:
            raise UserInputError("--target-fpr: only used with --learn N (to re-calibrate "
                                 "from images use `careg-edge calibrate`)")
        return None
    if max_frames is not None and max_frames < learn:
        raise UserInputError(f"--max-frames {max_frames}: stops before the {learn} "
                             f"--learn frames are in; raise it or lower --learn")
    from ..recalibrate import Learner
    return Learner(learn, 0.01 if target_fpr is None else target_fpr, label)
