"""`careg-edge calibrate`: threshold re-set from more good images or to a value, with history.

The CLI tests enroll the bundled demo flange with the fake inspector of test_live
(an honest mean-image detector, milliseconds per image), so every number can be
recomputed here; the last test runs the real Inspector end to end and reads the
written profile with the C API (careg_profile_load / careg_profile_threshold).
"""
from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from careg_edge import __version__, synth_parts
from careg_edge.calibration.threshold import needed_images, threshold_from_good
from careg_edge.cli import cli
from careg_edge.container import read_container
from careg_edge.profile import Profile
from test_live import FakeInspector, fake  # noqa: F401  (fake: the CLI gets a FakeInspector)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "careg_edge" / "demo_data" / "flange"
CPP = REPO / "cpp"
NEED = needed_images(0.01)


def good_parts(d: Path, n: int, seed: int = 7000) -> Path:
    """The demo's good flanges plus more drawn by the same generator (the demo has 14)."""
    d.mkdir(parents=True, exist_ok=True)
    for f in sorted(DEMO.glob("*/good/*.png")):
        shutil.copy(f, d / f"{f.parent.parent.name}_{f.name}")
    for i in range(n - len(list(d.glob("*.png")))):
        img, _ = synth_parts.make_part(seed + i, 224)
        cv2.imwrite(str(d / f"line_{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return d


def enroll(path: Path, *extra) -> Path:
    r = CliRunner().invoke(cli, ["enroll", "--support", str(DEMO / "train" / "good"), "-o", str(path),
                                 *extra])
    assert r.exit_code == 0, r.output
    return path


def calibrate(*args):
    return CliRunner().invoke(cli, ["calibrate", *map(str, args)])


def one_error_line(r, *needles):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    errs = [ln for ln in r.output.splitlines() if ln.startswith("careg-edge: error:")]
    assert len(errs) == 1, r.output
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]


def fake_scores(files, profile):
    insp = FakeInspector()
    return np.array([insp.inspect(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), profile).score
                     for f in files])


def test_calibrate_from_good_sets_the_threshold_and_keeps_history(tmp_path, fake):
    prof = enroll(tmp_path / "part.careg")
    enrolled = Profile.load(prof)
    good = good_parts(tmp_path / "good", 30)
    r = calibrate("--profile", prof, "--good", good)
    assert r.exit_code == 0, r.output

    scores = fake_scores(sorted(good.glob("*.png")), enrolled)  # recomputed independently
    want = threshold_from_good(scores, 0.01)
    p = Profile.load(prof)
    assert p.threshold == pytest.approx(want["threshold"], rel=1e-12)
    assert p.threshold != enrolled.threshold
    # the flat key the C++ reader uses is the new threshold
    _, meta = read_container(prof, "careg-profile", 1)
    assert float(meta["threshold"]) == p.threshold
    (rec,) = p.threshold_history
    assert rec["threshold"] == p.threshold and rec["previous"] == enrolled.threshold
    assert (rec["method"], rec["target_fpr"], rec["n_images"]) == (want["method"], 0.01, 30)
    assert rec["source"] == str(good.resolve()) and rec["careg_edge"] == __version__
    assert datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).tzinfo is not None
    # before/after: both thresholds and how often each flags these good images
    old_rate, new_rate = (scores > enrolled.threshold).mean(), (scores > p.threshold).mean()
    assert f"threshold {enrolled.threshold:.6g} -> {p.threshold:.6g} ({want['method']}" in r.output
    assert f"old threshold flagged {old_rate:.1%}, the new one flags {new_rate:.1%}" in r.output
    assert "30 good images" in r.output

    r = calibrate("--profile", prof, "--threshold", "0.25")  # explicit: appended, not replaced
    assert r.exit_code == 0, r.output
    q = Profile.load(prof)
    assert q.threshold == 0.25 and len(q.threshold_history) == 2
    assert q.threshold_history[0] == rec
    assert q.threshold_history[1]["previous"] == p.threshold
    assert (q.threshold_history[1]["source"], q.threshold_history[1]["n_images"]) == ("explicit", 0)
    assert q.info["n_support"] == enrolled.info["n_support"]  # the rest of the profile kept
    for k, a in enrolled.tensors.items():
        assert q.tensors[k].tobytes() == a.tobytes()
    r = calibrate("--profile", prof)  # no action: shows the history
    assert r.exit_code == 0 and "0.25" in r.output and str(good.resolve()) in r.output
    assert len([ln for ln in r.output.splitlines() if " -> " in ln]) == 2


def test_output_option_leaves_the_original_alone(tmp_path, fake):
    prof = enroll(tmp_path / "part.careg")
    before = prof.read_bytes()
    out = tmp_path / "v2.careg"
    r = calibrate("--profile", prof, "--threshold", "1.5", "-o", out)
    assert r.exit_code == 0, r.output
    assert prof.read_bytes() == before and Profile.load(out).threshold == 1.5
    assert not list(tmp_path.glob("*.tmp*"))


def test_too_few_good_images_says_how_many_are_needed(tmp_path, fake):
    prof = enroll(tmp_path / "part.careg")
    before = prof.read_bytes()
    r = calibrate("--profile", prof, "--good", DEMO / "train" / "good")  # the demo's 10
    one_error_line(r, "10 images", f"needs at least {NEED}", "--good")
    d = good_parts(tmp_path / "good", NEED)  # enough files, but two unreadable: too few left
    for name in ("line_000.png", "line_001.png"):
        (d / name).write_bytes(b"\x89PNG truncated")
    r = calibrate("--profile", prof, "--good", d)
    one_error_line(r, f"{NEED - 2} usable", f"at least {NEED}")
    assert "line_000.png, line_001.png" in r.output  # the warning named them first
    assert prof.read_bytes() == before


def test_unreadable_files_are_named_and_the_rest_used(tmp_path, fake):
    prof = enroll(tmp_path / "part.careg")
    d = good_parts(tmp_path / "good", 24)
    (d / "half_copied.png").write_bytes(cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))[1]
                                        .tobytes()[:60])
    (d / "notes.jpg").write_bytes(b"not an image")
    r = calibrate("--profile", prof, "--good", d)
    assert r.exit_code == 0, r.output
    warn = [ln for ln in r.output.splitlines() if ln.startswith("careg-edge: warning")]
    assert len(warn) == 1 and "half_copied.png" in warn[0] and "notes.jpg" in warn[0]
    assert "2 unreadable" in warn[0]
    assert Profile.load(prof).threshold_history[-1]["n_images"] == 24


def test_no_image_at_all_is_a_clear_error(tmp_path, fake):
    prof = enroll(tmp_path / "part.careg")
    (tmp_path / "empty").mkdir()
    one_error_line(calibrate("--profile", prof, "--good", tmp_path / "empty"), "no images found")
    one_error_line(calibrate("--profile", prof, "--good", tmp_path / "nope"), "does not exist")
    one_error_line(calibrate("--profile", prof, "--good", str(tmp_path / "*.png")), "no images found")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(NEED):
        (broken / f"b{i:02d}.png").write_bytes(b"nope")
    one_error_line(calibrate("--profile", prof, "--good", broken), "none of its 20 image files",
                   "b00.png")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "abc", ""])
def test_bad_threshold_values_are_refused(tmp_path, fake, value):
    prof = enroll(tmp_path / "part.careg")
    before = prof.read_bytes()
    one_error_line(calibrate("--profile", prof, "--threshold", value), "--threshold")
    assert prof.read_bytes() == before


def test_conflicting_or_missing_arguments(tmp_path, fake):
    prof = enroll(tmp_path / "part.careg")
    one_error_line(calibrate("--profile", prof, "--good", tmp_path, "--threshold", "1"), "not both")
    one_error_line(calibrate("--profile", tmp_path / "none.careg", "--threshold", "1"), "file not found")
    one_error_line(calibrate("--profile", prof, "--good", DEMO / "train" / "good", "--target-fpr", "0.7"),
                   "target false-alarm rate")
    one_error_line(calibrate("--profile", prof, "--threshold", "1", "-o", tmp_path / "no" / "x.careg"),
                   "does not exist")


def test_set_threshold_api_records_and_refuses(tmp_path):
    p = Profile("patchcore", {"bank": np.ones((4, 2), np.float32), "bank_pos": np.arange(4, dtype=np.int32)},
                threshold=2.0, grid=(2, 2), image_size=(8, 8), sigma=1.0, encoder_hash="a" * 64)
    rec = p.set_threshold(3.0, {"method": "explicit", "source": "explicit"})
    assert p.threshold == 3.0 and rec["previous"] == 2.0 and p.threshold_history == [rec]
    for bad in (0, -2, math.nan, math.inf, "x"):
        with pytest.raises(Exception, match="threshold"):
            p.set_threshold(bad, {})
    assert p.threshold == 3.0 and len(p.threshold_history) == 1
    q = Profile.load(p.save(tmp_path / "p.careg"))
    assert q.threshold_history == [rec]


# ----------------------------------------------------------------- the C reader
def _c_library(tmp: Path) -> Path:
    """The C API of the working tree as a shared library (-O0: ~20 s on 2 cores)."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    arch = ["-mavx2", "-mfma", "-mf16c"] if "x86" in __import__("platform").machine() else []
    lib = tmp / "libcareg_core.so"
    cmd = [cxx, "-std=c++17", "-O0", "-shared", "-fPIC", *arch, f"-I{CPP / 'include'}",
           *map(str, sorted((CPP / "src").glob("*.cpp"))), "-o", str(lib), "-lpthread"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return lib


def c_threshold(lib: Path, profile: Path) -> float:
    c = ctypes.CDLL(str(lib))
    c.careg_profile_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    c.careg_profile_threshold.argtypes = [ctypes.c_void_p]
    c.careg_profile_threshold.restype = ctypes.c_float
    c.careg_last_error.restype = ctypes.c_char_p
    c.careg_free.argtypes = [ctypes.c_void_p]
    h = ctypes.c_void_p()
    status = c.careg_profile_load(str(profile).encode(), ctypes.byref(h))
    assert status == 0, c.careg_last_error().decode()
    try:
        return float(c.careg_profile_threshold(h))
    finally:
        c.careg_free(h)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="builds a .so with the system compiler")
def test_real_inspector_end_to_end_and_the_c_reader_reads_the_new_threshold(tmp_path):
    """Enroll 3 demo flanges with the shipped encoder, re-calibrate from 24 good parts,
    then set a value: the C API reads each new threshold from the file."""
    pytest.importorskip("careg_edge.pipeline")
    prof = enroll(tmp_path / "part.careg", "--shots", "3", "--augment", "none", "--estimator", "padim")
    lib = _c_library(tmp_path)
    assert c_threshold(lib, prof) == pytest.approx(Profile.load(prof).threshold, rel=1e-6)
    good = good_parts(tmp_path / "good", 24)
    r = CliRunner().invoke(cli, ["--threads", "2", "calibrate", "--profile", str(prof), "--good", str(good)])
    assert r.exit_code == 0, r.output
    p = Profile.load(prof)
    assert p.threshold_history[-1]["n_images"] == 24 and "calibration" in p.info
    assert "enrollment" in r.output and "-> " in r.output  # the history, enrollment first
    assert c_threshold(lib, prof) == pytest.approx(p.threshold, rel=1e-6)
    from careg_edge import Inspector  # the good images the threshold came from pass it (target 1 %)
    rs = Inspector(threads=2).inspect_batch(sorted(good.glob("*.png")), p)
    assert sum(x.is_defect for x in rs) <= 1 and all(x.threshold == p.threshold for x in rs)
    assert calibrate("--profile", prof, "--threshold", "1234.5").exit_code == 0
    assert c_threshold(lib, prof) == 1234.5
