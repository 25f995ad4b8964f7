"""The bundled demo: material is reproducible, defects are where their masks say,
and the report names every input. The fast tests use the fake inspector from
test_live.py; test_demo_real_inspector runs the shipped path end to end."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from careg_edge import demo, synth_parts
from careg_edge.cli import cli

DATA = demo.DATA


def test_bundled_material_is_small_and_complete():
    files = [p for p in DATA.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 4e6
    assert len(list((DATA / "train" / "good").glob("*.png"))) == 10
    for kind in ("good",) + synth_parts.DEFECTS:
        assert len(list((DATA / "test" / kind).glob("*.png"))) >= 3
    assert (DATA.parent / "README.md").read_text().count("synth_parts") >= 1


def test_bundled_images_regenerate_from_their_seeds(tmp_path):
    """The README's claim: `python -m careg_edge.synth_parts` reproduces the set."""
    synth_parts.write_dataset(tmp_path)
    bundled = sorted(p.relative_to(DATA) for p in DATA.rglob("*.png"))
    assert bundled == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    for rel in bundled[::5]:
        a, b = cv2.imread(str(DATA / rel), cv2.IMREAD_UNCHANGED), cv2.imread(str(tmp_path / rel), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b, err_msg=str(rel))


@pytest.mark.parametrize("kind", synth_parts.DEFECTS)
def test_each_defect_changes_the_part_only_inside_its_mask(kind):
    # same seed: the good part and the defective part share pose, lighting and noise
    # except for the defect (missing_hole redraws, so compare outside the mask only)
    img, mask = synth_parts.make_part(7, 128, kind)
    assert mask.dtype == bool and 0.001 < mask.mean() < 0.15
    good, gmask = synth_parts.make_part(7, 128, None)
    assert not gmask.any()
    diff = np.abs(img.astype(int) - good.astype(int)).max(2)
    if kind != "missing_hole":  # noise differs after the defect draws from the rng
        inside, outside = diff[mask].mean(), diff[~mask].mean()
        assert inside > 3 * outside, (inside, outside)
    else:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        assert grey[mask].mean() > 100  # the hole (dark, ~18) is filled with metal


def test_generator_rejects_unknown_defect():
    from careg_edge.errors import UserInputError
    with pytest.raises(UserInputError, match="scratch"):
        synth_parts.make_part(0, 64, "scrach")


def test_demo_report_names_every_input_fake_inspector(tmp_path, monkeypatch):
    from test_live import FakeInspector
    monkeypatch.setattr("careg_edge.cli_context.make_inspector", lambda model=None: FakeInspector())
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    report = out / "report.html"
    assert f"report: {report.resolve()}" in r.output
    html = report.read_text()
    inputs = [f"test/{p.parent.name}/{p.name}" for p in DATA.glob("test/*/*.png")]
    inputs += [f"train/good/{p.name}" for p in DATA.glob("train/good/*.png")]
    assert len(inputs) == 26
    for name in inputs:
        assert name in html, name
    for src in re.findall(r"src='([^']+)'", html):  # every image the page shows exists and decodes
        assert cv2.imread(str(out / src)) is not None, src
    assert html.count("<tr class=") == 16
    # a second run replaces its own folder; a foreign folder is refused
    assert CliRunner().invoke(cli, ["demo", "--out", str(out)]).exit_code == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    r = CliRunner().invoke(cli, ["demo", "--out", str(foreign)])
    assert r.exit_code == 2 and "--force" in r.output


@pytest.mark.slow
def test_demo_real_inspector(tmp_path):
    """The shipped path: Inspector(model=None) on the bundled flange."""
    pytest.importorskip("careg_edge.pipeline")
    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, ["--threads", str(min(2, os.cpu_count() or 1)), "demo",
                                 "--out", str(tmp_path / "d")])
    dt = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    html = (tmp_path / "d" / "report.html").read_text()
    for p in DATA.glob("test/*/*.png"):
        assert f"test/{p.parent.name}/{p.name}" in html
    m = re.search(r"defects caught: (\d+)/(\d+); false alarms: (\d+)/(\d+); image AUROC ([\d.]+)", r.output)
    assert m, r.output
    caught, n_def, alarms, n_good, auroc = int(m[1]), int(m[2]), int(m[3]), int(m[4]), float(m[5])
    assert (n_def, n_good) == (12, 4)
    print(f"demo: {dt:.1f} s, caught {caught}/12, false alarms {alarms}/4, AUROC {auroc:.3f}")
    assert auroc >= 0.8  # the defects are visible; a working pipeline separates them
    # the line check: fresh good parts measure the threshold, half of them re-set it
    lines = re.findall(r"(enrollment threshold|re-calibrated on 60 fresh good parts \(\S+\)) "
                       r"([\d.]+): defects caught (\d+)/12; false alarms (\d+)/4 bundled "
                       r"\+ (\d+)/60 fresh good parts", r.output)
    assert len(lines) == 2, r.output
    assert int(lines[0][2]) == caught and int(lines[0][3]) == alarms
    from careg_edge import Profile
    hist = Profile.load(tmp_path / "d" / "flange-recalibrated.careg").threshold_history
    assert len(hist) == 1 and hist[0]["threshold"] == pytest.approx(float(lines[1][1]), rel=1e-3)
