"""`careg-edge enroll` + `careg-edge run` end to end with the real Inspector
(default encoder) on the bundled flange: an image folder and a video the test
writes. Kept small (3 support images, 6 + 8 frames) for 2 cores."""
from __future__ import annotations

import json
import math
import shutil

import cv2
import pytest
from click.testing import CliRunner

from careg_edge.cli import cli
from careg_edge.demo import DATA
from test_live import validate

pytest.importorskip("careg_edge.pipeline")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    support = d / "good"
    support.mkdir()
    for p in sorted((DATA / "train" / "good").glob("*.png"))[:3]:
        shutil.copy(p, support / p.name)
    prof = d / "flange.careg"
    r = CliRunner().invoke(cli, ["--threads", "2", "enroll", "--support", str(support), "--augment",
                                 "none", "-o", str(prof)])
    assert r.exit_code == 0, r.output
    assert "threshold:" in r.output and "expected detection rate:" in r.output
    from careg_edge import Profile
    return d, Profile.load(prof)


def check_lines(text, profile, n):
    recs = [json.loads(x) for x in text.splitlines() if x.strip()]
    assert len(recs) == n
    for i, rec in enumerate(recs):
        validate(rec)
        assert rec["frame"] == i and math.isfinite(rec["score"])
        assert rec["threshold"] == pytest.approx(profile.threshold, rel=1e-5)
        assert rec["decision"] == ("defect" if rec["score"] > rec["threshold"] else "ok")
        assert {"encode", "total", "queue"} <= set(rec["latency_ms"])
    return recs


def test_real_run_on_folder_with_save_defects(real):
    d, profile = real
    imgs = d / "batch"
    imgs.mkdir()
    picks = sorted((DATA / "test" / "good").glob("*.png"))[:2] + sorted((DATA / "test" / "stain").glob("*.png"))
    for p in picks:
        shutil.copy(p, imgs / f"{p.parent.name}_{p.name}")
    r = CliRunner().invoke(cli, ["--threads", "2", "run", "--profile", str(d / "flange.careg"),
                                 "--images", str(imgs), "--batch", "2", "--save-defects", str(d / "sd")])
    assert r.exit_code == 0, r.output
    recs = check_lines(r.stdout, profile, len(picks))
    stains = [x for x in recs if x["name"].startswith("stain")]
    goods = [x for x in recs if x["name"].startswith("good")]
    assert min(x["score"] for x in stains) > max(x["score"] for x in goods)
    for x in recs:
        if x["decision"] == "defect":
            assert all(cv2.imread(p) is not None for p in x["saved"])


def test_real_run_on_video(real, tmp_path):
    d, profile = real
    vid = tmp_path / "flange.avi"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 10, (224, 224))
    frames = sorted((DATA / "test").glob("*/000.png")) + sorted((DATA / "test").glob("*/001.png"))[:3]
    for p in frames:
        w.write(cv2.imread(str(p)))
    w.release()
    r = CliRunner().invoke(cli, ["--threads", "2", "run", "--profile", str(d / "flange.careg"),
                                 "--video", str(vid)])
    assert r.exit_code == 0, r.output
    check_lines(r.stdout, profile, len(frames))
    assert f"{len(frames)} frames" in r.output and "0 dropped" in r.output
