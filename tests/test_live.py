"""Live inspection: sources, capture thread, JSON lines, overlays, summary.

Most tests drive `careg-edge run` with a tiny fake Inspector (an honest
mean-image detector whose state travels in a real .careg Profile), so they
exercise the CLI, the capture thread and the record format in milliseconds.
The end-to-end tests with the real Inspector live in test_live_real.py.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from careg_edge import live
from careg_edge.cli import cli
from careg_edge.decision import Result
from careg_edge.encoder_meta import EncoderMeta
from careg_edge.profile import Profile

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # fake encoder input: every frame is compared at 32x32


# ----------------------------------------------------------------- the fake inspector
class FakeInspector:
    """score = max |grey - mean good grey| (blurred); threshold = 2 x worst good score + 0.03."""

    meta = EncoderMeta(encoder_hash="f" * 64, backbone="fake", input_size=(SIZE, SIZE),
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def __init__(self, delay=0.0, model=None, **kw):
        self.delay, self.calls = delay, 0

    @staticmethod
    def _grey(img):
        from careg_edge.imageio import as_rgb8
        a = cv2.cvtColor(as_rgb8(img), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
        return cv2.resize(a, (SIZE, SIZE), interpolation=cv2.INTER_AREA)

    def enroll(self, images, estimator="patchcore", augment="auto", seed=0, target_fpr=0.01,
               progress=None, image_score="top20%"):
        g = np.stack([self._grey(i) for i in images])
        mean = g.mean(0)
        worst = max(float(cv2.GaussianBlur(np.abs(x - mean), (0, 0), 1).max()) for x in g)
        return Profile("patchcore", {"bank": mean.reshape(-1, 1).astype(np.float32),
                                     "bank_pos": np.arange(SIZE * SIZE, dtype=np.int32)},
                       threshold=2.0 * worst + 0.03, grid=(SIZE, SIZE), image_size=(SIZE, SIZE),
                       sigma=1.0, encoder_hash=self.meta.encoder_hash,
                       info={"augment": ["none"], "n_support": len(images)})

    def check(self, profile):
        profile.check_encoder(self.meta.encoder_hash, self.meta.backbone)

    def inspect(self, img, profile):
        from careg_edge.imageio import as_rgb8
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        t0 = time.perf_counter()
        rgb = as_rgb8(img)
        mean = profile.tensors["bank"].reshape(SIZE, SIZE)
        small = cv2.GaussianBlur(np.abs(self._grey(rgb) - mean), (0, 0), 1)
        amap = cv2.resize(small, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        score = float(small.max())
        return Result(score=score, anomaly_map=amap, mask=amap > profile.threshold,
                      is_defect=score > profile.threshold, threshold=profile.threshold,
                      timings={"encoder": 0.1, "score": (time.perf_counter() - t0) * 1e3})

    def inspect_batch(self, images, profile):
        return [self.inspect(i, profile) for i in images]


@pytest.fixture
def fake(monkeypatch):
    insp = FakeInspector()
    monkeypatch.setattr("careg_edge.cli_context.make_inspector", lambda model=None: insp)
    return insp


def good_frame(rng, h=48, w=64):
    return (np.full((h, w, 3), 120) + rng.integers(-3, 4, (h, w, 3))).astype(np.uint8)


def bad_frame(rng, h=48, w=64):
    f = good_frame(rng, h, w)
    f[10:25, 20:40] = 250  # a bright blob: the fake's score jumps
    return f


def write_folder(d: Path, n_good=6, n_bad=2, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        cv2.imwrite(str(d / f"good_{i}.png"), good_frame(rng))
    for i in range(n_bad):
        cv2.imwrite(str(d / f"bad_{i}.png"), bad_frame(rng))
    return d


def write_video(path: Path, n: int, bad_every=0, seed=0):
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    assert w.isOpened()
    for i in range(n):
        w.write(bad_frame(rng) if bad_every and i % bad_every == bad_every - 1 else good_frame(rng))
    w.release()
    return path


@pytest.fixture
def enrolled(tmp_path, fake):
    support = write_folder(tmp_path / "good", n_good=6, n_bad=0)
    prof = tmp_path / "part.careg"
    r = CliRunner().invoke(cli, ["enroll", "--support", str(support), "-o", str(prof)])
    assert r.exit_code == 0, r.output
    return prof


# ----------------------------------------------------------------- schema check
def validate(rec, schema=live.RECORD_SCHEMA, where="record"):
    """Enough JSON Schema for RECORD_SCHEMA: type, required, enum, minimum, properties."""
    types = {"object": dict, "string": str, "integer": int, "number": (int, float), "array": list}
    if "enum" in schema:
        assert rec in schema["enum"], f"{where}: {rec!r} not in {schema['enum']}"
    if "type" in schema:
        assert isinstance(rec, types[schema["type"]]) and not isinstance(rec, bool), f"{where}: {rec!r}"
    if "minimum" in schema:
        assert rec >= schema["minimum"], where
    if isinstance(rec, dict):
        for k in schema.get("required", []):
            assert k in rec, f"{where}: missing {k}"
        props = schema.get("properties", {})
        for k, v in rec.items():
            if k in props:
                validate(v, props[k], f"{where}.{k}")
            elif schema.get("additionalProperties") is False:
                raise AssertionError(f"{where}: unexpected key {k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(v, schema["additionalProperties"], f"{where}.{k}")
    if isinstance(rec, list) and "items" in schema:
        for i, v in enumerate(rec):
            validate(v, schema["items"], f"{where}[{i}]")


def lines(text):
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def test_validator_rejects_bad_records():
    good = {"ts": "t", "source": "s", "frame": 0, "decision": "ok"}
    validate(good)
    for bad in ({**good, "decision": "maybe"}, {**good, "frame": -1}, {**good, "extra": 1},
                {k: v for k, v in good.items() if k != "ts"}):
        with pytest.raises(AssertionError):
            validate(bad)


# ----------------------------------------------------------------- enroll
def test_enroll_refuses_overwrite_without_force(enrolled, tmp_path):
    before = enrolled.read_bytes()
    r = CliRunner().invoke(cli, ["enroll", "--support", str(tmp_path / "good"), "-o", str(enrolled)])
    assert r.exit_code == 2 and "--force" in r.output and "Traceback" not in r.output
    assert enrolled.read_bytes() == before
    r = CliRunner().invoke(cli, ["enroll", "--support", str(tmp_path / "good"), "-o", str(enrolled),
                                 "--force", "--shots", "3"])
    assert r.exit_code == 0, r.output
    assert "threshold:" in r.output and "augmentations:" in r.output and "MB" in r.output


def test_enroll_shots_is_a_seeded_subset(tmp_path):
    from careg_edge.commands.enroll import pick_shots
    files = [f"f{i}" for i in range(10)]
    a, b = pick_shots(files, 4, seed=1), pick_shots(files, 4, seed=1)
    assert a == b and len(set(a)) == 4 and set(a) <= set(files) and a == sorted(a)
    assert pick_shots(files, 4, seed=2) != a or pick_shots(files, 4, seed=3) != a


# ----------------------------------------------------------------- run: folder, video
def test_run_on_folder_writes_valid_lines_and_counts_unreadable(enrolled, tmp_path):
    d = write_folder(tmp_path / "batch", n_good=3, n_bad=2, seed=5)
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--images", str(d),
                                 "--jsonl", str(out), "--batch", "2"])
    assert r.exit_code == 0, r.output
    recs = lines(out.read_text())
    for rec in recs:
        validate(rec)
    assert [x["frame"] for x in recs] == list(range(6))
    by_name = {x["name"]: x for x in recs}
    assert set(by_name) == {"bad_0.png", "bad_1.png", "broken.png", "good_0.png", "good_1.png", "good_2.png"}
    assert by_name["broken.png"]["decision"] == "unreadable"
    assert all(by_name[f"bad_{i}.png"]["decision"] == "defect" for i in range(2))
    assert all(by_name[f"good_{i}.png"]["decision"] == "ok" for i in range(3))
    assert "6 frames" not in r.output and "5 frames, 2 defects, 0 dropped, 1 unreadable" in r.output


def test_run_on_video_and_save_defects(enrolled, tmp_path):
    vid = write_video(tmp_path / "line.avi", 40, bad_every=10)
    sd = tmp_path / "defects"
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--video", str(vid),
                                 "--save-defects", str(sd)])
    assert r.exit_code == 0, r.output
    recs = lines(r.stdout)
    for rec in recs:
        validate(rec)
    assert len(recs) == 40
    defects = [x for x in recs if x["decision"] == "defect"]
    assert [x["frame"] for x in defects] == [9, 19, 29, 39]
    for x in defects:
        frame, overlay, mask = (cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in x["saved"])
        assert frame.shape == (48, 64, 3) and overlay.shape == (48, 64, 3)
        assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
        # the mask sits on the bright blob the frame was given
        assert mask[10:25, 20:40].mean() > 4 * mask.mean() / 2
    assert len(list(sd.glob("*.png"))) == 12 and not list(sd.glob("*.tmp"))


def test_roi_resize_and_max_frames(enrolled, tmp_path):
    vid = write_video(tmp_path / "v.avi", 30)
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--video", str(vid), "--roi",
                                 "8,8,40,30", "--resize", "20x10", "--max-frames", "7"])
    assert r.exit_code == 0, r.output
    assert len(lines(r.stdout)) == 7
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--video", str(vid), "--roi", "50,40,40,30"])
    assert r.exit_code == 2 and "outside the 64x48 frame" in r.output


def test_prepare_matches_numpy_and_cv2():
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    np.testing.assert_array_equal(live.prepare(img, (5, 7, 20, 10)), img[7:17, 5:25])
    np.testing.assert_array_equal(live.prepare(img, None, (30, 20)),
                                  cv2.resize(img, (30, 20), interpolation=cv2.INTER_AREA))
    lb = live.prepare(img, None, (60, 60), "letterbox")  # 60x40 into 60x60: 10-px bars
    assert lb.shape == (60, 60, 3) and lb[:10].max() == 0 and lb[50:].max() == 0
    np.testing.assert_array_equal(lb[10:50], img)
    cr = live.prepare(img, None, (40, 40), "crop")  # height fits, width cropped in the centre
    np.testing.assert_array_equal(cr, img[:, 10:50])


# ----------------------------------------------------------------- bad sources
def test_missing_camera_is_one_line_and_exit_3(enrolled):
    t0 = time.monotonic()
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--camera", "97", "--reconnect", "1"])
    assert r.exit_code == 3, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("careg-edge: error")]
    assert len(err) == 1 and "camera:97" in err[0] and "--reconnect" in err[0]
    assert "Traceback" not in r.output and 0.9 < time.monotonic() - t0 < 10
    assert '"frame"' not in r.output  # refused before any output


def test_images_matching_nothing_says_so(enrolled, tmp_path):
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--images", str(tmp_path / "*.jpg")])
    assert r.exit_code == 2 and "no images found" in r.output


def test_profile_of_another_encoder_refused_before_source_opens(enrolled, tmp_path, fake, monkeypatch):
    monkeypatch.setattr(fake, "meta", replace(fake.meta, encoder_hash="0" * 64, backbone="other"))
    opened = []
    monkeypatch.setattr(live.CvSource, "open", lambda self: opened.append(1) or False)
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--camera", "0"])
    assert r.exit_code == 2 and "re-enroll" in r.output and not opened


def test_two_sources_or_none_are_refused(enrolled, tmp_path):
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled)])
    assert r.exit_code == 2 and "exactly one source" in r.output
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--camera", "0", "--images", "x"])
    assert r.exit_code == 2 and "--camera, --images" in r.output


class FakeCamera(live.Source):
    """A live source: `n` frames as fast as possible, then lost for good."""

    live, label = True, "camera:fake"

    def __init__(self, n, reopen=False):
        self.n, self.i, self.opened, self.reopen = n, 0, 0, reopen
        self.rng = np.random.default_rng(0)

    def open(self):
        self.opened += 1
        return self.opened == 1 or self.reopen

    def read(self):
        if self.i >= self.n:
            return "end", None, ""
        self.i += 1
        return "ok", good_frame(self.rng), ""


def test_overload_drops_frames_and_counts_them(enrolled):
    cam = FakeCamera(300)
    s = live.run_live(cam, FakeInspector(delay=0.005), {"p": Profile.load(enrolled)}, io.StringIO(),
                      live.LiveOptions(queue_size=2, reconnect_s=0))
    assert s.dropped > 0 and s.frames + s.dropped == 300
    assert isinstance(s.error, live.SourceUnavailable) and "camera:fake" in str(s.error)


def test_lost_camera_retries_then_fails(enrolled):
    cam = FakeCamera(5)
    t0 = time.monotonic()
    s = live.run_live(cam, FakeInspector(), {"p": Profile.load(enrolled)}, io.StringIO(),
                      live.LiveOptions(reconnect_s=1.2))
    assert s.frames == 5 and isinstance(s.error, live.SourceUnavailable)
    assert cam.opened >= 3 and 1.1 < time.monotonic() - t0 < 6  # back-off 0.5 s, 0.7 s left


# ----------------------------------------------------------------- stats
def test_latency_percentiles_match_numpy():
    x = np.random.default_rng(0).lognormal(2.0, 1.0, 20000)
    h = live.LatencyHistogram()
    for v in x:
        h.add(float(v))
    for q in (50, 90, 99):
        assert h.percentile(q) == pytest.approx(np.percentile(x, q), rel=0.012)


# ----------------------------------------------------------------- SIGINT
SIGINT_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import careg_edge.cli as c
    import careg_edge.cli_context as ctx
    from test_live import FakeInspector
    ctx.make_inspector = lambda model=None: FakeInspector(delay=0.02)
    c.main(sys.argv[1:])
""")


def test_sigint_prints_summary_and_exits_0(enrolled, tmp_path):
    vid = write_video(tmp_path / "long.avi", 600)
    script = tmp_path / "drive.py"
    script.write_text(SIGINT_SCRIPT.format(tests=str(Path(__file__).parent)))
    p = subprocess.Popen([sys.executable, str(script), "run", "--profile", str(enrolled), "--video", str(vid)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first = p.stdout.readline()  # the run is under way once a line comes out
    assert json.loads(first)["frame"] == 0
    p.send_signal(2)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "[interrupted]" in err and "frames" in err and "p99" in err and "Traceback" not in err
    n = 1 + len(lines(out))
    assert 0 < n < 600
    assert f"{n} frames" in err  # the summary counts exactly the lines written


# ----------------------------------------------------------------- long run
def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_2000_frames_flat_memory_and_every_frame_counted(enrolled, tmp_path):
    """Bound: RSS may grow at most 8 MB between frame 300 and frame 2000.

    Uses the fake inspector (the real encoder needs ~minutes for 2,000 frames on
    2 cores); what is measured is the live loop: capture thread, queue, records,
    latency statistics and defect files.
    """
    vid = write_video(tmp_path / "2k.avi", 2000, bad_every=100)
    insp, rss = FakeInspector(), {}
    orig = insp.inspect

    def sampling(img, profile):
        if insp.calls in (300, 1999):
            rss[insp.calls] = _rss_mb()
        return orig(img, profile)
    insp.inspect = sampling
    out = tmp_path / "2k.jsonl"
    with open(out, "w") as f:
        s = live.run_live(live.open_source(video=str(vid)), insp, {"p": Profile.load(enrolled)}, f,
                          live.LiveOptions(batch=4, save_defects=tmp_path / "sd"))
    assert s.frames == 2000 and s.dropped == 0 and s.unreadable == 0 and s.defects == 20
    assert len(out.read_text().splitlines()) == 2000
    assert rss[1999] - rss[300] < 8.0, rss


def test_profile_of_another_format_version_says_which(enrolled, tmp_path):
    from careg_edge.container import write_container
    p = Profile.load(enrolled)
    old = tmp_path / "v2.careg"
    write_container(old, p.tensors, p.metadata(), "careg-profile", 2)
    r = CliRunner().invoke(cli, ["run", "--profile", str(old), "--images", str(tmp_path / "good")])
    assert r.exit_code == 2 and "format version 2" in r.output and "reads version 1" in r.output
    assert "Traceback" not in r.output and '"frame"' not in r.output


def test_show_without_display_says_so_and_continues(enrolled, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    vid = write_video(tmp_path / "v.avi", 5)
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--video", str(vid), "--show"])
    assert r.exit_code == 0 and "--show: cannot open a window" in r.output
    assert len(lines(r.stdout)) == 5


def test_stream_url_is_a_live_source(enrolled, tmp_path):
    # Any string OpenCV opens; a file path stands in for rtsp:// here. At its end the
    # "stream" is lost and reopened (live semantics), so --max-frames ends the run.
    vid = write_video(tmp_path / "cam.avi", 12)
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--stream", str(vid),
                                 "--max-frames", "30", "--reconnect", "2"])
    assert r.exit_code == 0, r.output
    recs = lines(r.stdout)
    assert len(recs) == 30 and all(x["source"] == f"stream:{vid}" for x in recs)


# ----------------------------------------------------------------- run --learn N
def write_sequence(d: Path, kinds: str, seed=0) -> Path:
    """Frames f000.png, f001.png, ... in order; kinds: 'g' good, 'b' defect, 'x' unreadable.
    The same seed gives the same good frames whatever defects are mixed in."""
    rng_good, rng_bad = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    d.mkdir(parents=True, exist_ok=True)
    for i, k in enumerate(kinds):
        if k == "x":
            (d / f"f{i:03d}.png").write_bytes(b"\x89PNG cut short")
        else:
            cv2.imwrite(str(d / f"f{i:03d}.png"), good_frame(rng_good) if k == "g" else bad_frame(rng_bad))
    return d


def _learn(enrolled, tmp_path, name, kinds, n, *extra):
    prof = tmp_path / f"{name}.careg"
    prof.write_bytes(enrolled.read_bytes())
    d = write_sequence(tmp_path / name, kinds)
    r = CliRunner().invoke(cli, ["run", "--profile", str(prof), "--images", str(d), "--learn", str(n),
                                 "--batch", "4", *extra])
    return r, prof


def test_learn_rejects_defects_among_presumed_good_and_lands_the_same_threshold(enrolled, tmp_path):
    after = "gbgbg"  # inspection goes on after learning, with the new threshold
    clean, p_clean = _learn(enrolled, tmp_path, "clean", "g" * 30 + after, 30)
    mixed_kinds = "g" * 5 + "b" + "g" * 11 + "b" + "g" * 14 + after  # defects: frames 5 and 17
    mixed, p_mixed = _learn(enrolled, tmp_path, "mixed", mixed_kinds, 32)
    assert clean.exit_code == 0 and mixed.exit_code == 0, clean.output + mixed.output
    a, b = Profile.load(p_clean), Profile.load(p_mixed)
    old = Profile.load(enrolled).threshold
    assert a.threshold != old
    assert b.threshold == pytest.approx(a.threshold, rel=1e-12)  # the 2 defects changed nothing
    ha, hb = a.threshold_history[-1], b.threshold_history[-1]
    assert (ha["n_images"], ha["n_rejected"], hb["n_images"], hb["n_rejected"]) == (30, 0, 32, 2)
    assert hb["previous"] == old and hb["source"].startswith("images:") and hb["target_fpr"] == 0.01
    assert "2 rejected as outliers (frames 5, 17)" in mixed.output and f"-> {b.threshold:.6g}" in mixed.output
    recs = lines(mixed.stdout)
    for rec in recs:
        validate(rec)
    assert [x["decision"] for x in recs[:32]] == ["learning"] * 32  # no verdicts while learning
    assert all(x["threshold"] == pytest.approx(old, abs=1e-6) for x in recs[:32])
    assert [x["decision"] for x in recs[32:]] == ["ok", "defect", "ok", "defect", "ok"]
    assert all(x["threshold"] == pytest.approx(b.threshold, abs=1e-6) for x in recs[32:])
    assert "37 frames, 2 defects" in mixed.output and "32 learning" in mixed.output


def test_learn_stops_at_n_unreadable_frames_not_counted(enrolled, tmp_path):
    r, prof = _learn(enrolled, tmp_path, "x", "gggxg" + "g" * 16 + "b", 20, "--target-fpr", "0.05")
    assert r.exit_code == 0, r.output
    by_frame = {x["frame"]: x["decision"] for x in lines(r.stdout)}
    assert [by_frame[i] for i in range(22)] == ["learning"] * 3 + ["unreadable"] + ["learning"] * 17 \
        + ["defect"]
    h = Profile.load(prof).threshold_history[-1]
    assert (h["n_images"], h["target_fpr"]) == (20, 0.05)


def test_learn_source_ending_early_fixes_no_threshold(enrolled, tmp_path):
    before = enrolled.read_bytes()
    vid = write_video(tmp_path / "short.avi", 12)
    r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--video", str(vid), "--learn", "25"])
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("careg-edge: error")]
    assert len(err) == 1 and "the source ended after 12" in err[0] and "at least 20" in err[0]
    assert "threshold not changed" in err[0] and "Traceback" not in r.output
    assert enrolled.read_bytes() == before
    assert [x["decision"] for x in lines(r.stdout)] == ["learning"] * 12


def test_learn_camera_lost_before_enough_frames_fixes_nothing(enrolled):
    from careg_edge.recalibrate import Learner
    before = enrolled.read_bytes()
    learner = Learner(25, 0.01, "camera:fake")
    profiles = {"p": Profile.load(enrolled)}
    s = live.run_live(FakeCamera(8), FakeInspector(), profiles, io.StringIO(),
                      live.LiveOptions(reconnect_s=0, queue_size=64), learner=learner)
    assert isinstance(s.error, live.SourceUnavailable) and s.learning == 8
    assert "the source was lost after 8" in learner.problem and enrolled.read_bytes() == before
    # lost after enough frames (but fewer than N): fixed from those, and said so
    said = []
    learner = Learner(25, 0.01, "camera:fake")
    s = live.run_live(FakeCamera(22), FakeInspector(), profiles, io.StringIO(),
                      live.LiveOptions(reconnect_s=0, queue_size=64), log=said.append, learner=learner)
    assert learner.problem is None and any("after 22 of 25" in m for m in said), said
    assert Profile.load(enrolled).threshold_history[-1]["n_images"] == 22
    assert profiles["p"].threshold == Profile.load(enrolled).threshold


def test_learn_refuses_what_cannot_end_in_a_threshold(enrolled, tmp_path):
    d = write_folder(tmp_path / "imgs", n_good=3, n_bad=0)
    for args, want in ((["--learn", "10"], "needs at least 20"),
                       (["--learn", "25", "--max-frames", "10"], "--max-frames 10"),
                       (["--target-fpr", "0.01"], "only used with --learn"),
                       (["--learn", "30", "--target-fpr", "0.9"], "target false-alarm rate")):
        r = CliRunner().invoke(cli, ["run", "--profile", str(enrolled), "--images", str(d), *args])
        assert r.exit_code == 2 and want in r.output and '"frame"' not in r.output, (args, r.output)
