"""Synthetic normal categories: seeded, distinct, valid images, not the demo's
flange; training on them alone; the new train options' one-line errors."""
import json
import time

import numpy as np
import pytest

from careg_edge.errors import UserInputError
from careg_edge.lab.synth_categories import CATEGORIES, contact_sheet, make_category
from careg_edge.lab.train import TrainConfig, train


def test_deterministic_by_seed_and_prefix_stable():
    a = make_category("gear", 3, 48, seed=5)
    np.testing.assert_array_equal(a, make_category("gear", 3, 48, seed=5))
    np.testing.assert_array_equal(a[:2], make_category("gear", 2, 48, seed=5))  # i depends on i only
    assert np.abs(a.astype(int) - make_category("gear", 3, 48, seed=6)).mean() > 1.0


def test_values_and_per_image_variation():
    for name in CATEGORIES:
        x = make_category(name, 4, 48, seed=0)
        assert x.dtype == np.uint8 and x.shape == (4, 48, 48, 3)
        assert 10 < x.mean() < 245 and x.std() > 15, name       # neither blank nor saturated
        assert x.max() - x.min() > 100, name
        diff = np.abs(x[0].astype(int) - x[1].astype(int)).mean()
        assert diff > 2.0, (name, diff)                           # pose/lighting really vary


def test_categories_are_distinct_and_exclude_the_demo_flange():
    assert 5 <= len(CATEGORIES) <= 8 and len(set(CATEGORIES)) == len(CATEGORIES)
    assert not any("flange" in c for c in CATEGORIES)
    means = {c: make_category(c, 6, 32, seed=1).astype(np.float32).mean(0) for c in CATEGORIES}
    for i, a in enumerate(CATEGORIES):
        for b in CATEGORIES[i + 1:]:
            d = np.abs(means[a] - means[b]).mean()
            assert d > 15, (a, b, d)
    with pytest.raises(UserInputError, match="'flange' is unknown"):
        make_category("flange", 1, 32)


def test_generator_speed_is_reasonable():
    make_category("pcb", 1, 224)  # warm up OpenCV
    t = time.perf_counter()
    for name in CATEGORIES:
        make_category(name, 2, 224, seed=0)
    per_image = (time.perf_counter() - t) / (2 * len(CATEGORIES))
    assert per_image < 0.1, per_image  # target < 20 ms; loose bound for a loaded machine


def test_contact_sheet_has_a_row_per_category():
    sheet = contact_sheet(per_row=2, size=32)
    assert sheet.dtype == np.uint8 and sheet.shape[0] == len(CATEGORIES) * (32 + 8)


def test_train_on_synthetic_only(tmp_path):
    from careg_edge.encoder.checkpoint import load
    cfg = TrainConfig(roots=[], synthetic=2, synthetic_images=5, out=str(tmp_path / "run"),
                      backbone="mobilenet_v2", weights=None, image_size=64, k_shot=1, batch_size=2,
                      steps=2, holdout=2, eval_every=1, progress=False, lr=0.01)
    ck = load(train(cfg))
    assert ck.config["categories"] == {"synthetic/gear": 3, "synthetic/pcb": 3}
    assert ck.config["synthetic"] == 2 and ck.config["self_weight"] == 1.0
    assert ck.config["theta_weight"] == 1.0
    log = [json.loads(s) for s in open(tmp_path / "run" / "train_log.jsonl")]
    assert log[0]["step"] == 0 and log[0]["val_slope"] == 0.0  # untrained: identity STNs
    for r in log[1:]:
        total = r["loss_reg"] + r["loss_self"] + r["theta_weight"] * r["loss_theta"]
        assert r["loss"] == pytest.approx(total, abs=1e-6)
        assert r["loss_theta"] > 0
        assert -1 <= r["loss_self"] < 0
        assert {"val_cosine", "val_slope", "val_corr"} <= set(r)
        assert np.isfinite(r["val_slope"]) and abs(r["val_slope"]) < 0.5  # barely-trained STN


@pytest.mark.parametrize("args,match", [
    (["--synthetic", "1", "--self-weight", "-1"], "--self-weight -1.0: must be a number >= 0"),
    (["--synthetic", "1", "--self-weight", "nan"], "--self-weight nan"),
    (["--synthetic", "1", "--theta-weight", "-2"], "--theta-weight -2.0: must be a number >= 0"),
    (["--synthetic", "1", "--theta-anneal", "1.5"], "--theta-anneal 1.5: must be in 0..1"),
    (["--synthetic", "99"], "--synthetic 99: must be 0..7"),
    (["--synthetic", "1", "--synthetic-images", "2"], "--synthetic-images 2: need at least 3"),
    ([], "no dataset roots given"),
    (["--synthetic", "1", "--exclude", "gear"], "--exclude gear: applies to dataset roots")])
def test_cli_option_errors_one_line_exit_2(args, match, capsys, tmp_path):
    from careg_edge.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "-o", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "x").exists()  # rejected before anything was written


def test_cli_help_documents_the_new_options(capsys):
    from careg_edge.cli import main
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0
    for text in ("--self-weight", "[default: 1.0]", "--theta-weight", "--theta-anneal", "--synthetic", "--synthetic-images",
                 "val_slope", "-1 = undoes"):
        assert text in out, text
