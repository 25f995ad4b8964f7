"""Threshold from good images only, and the good-image folder reader."""
import numpy as np
import pytest

from careg_edge.calibration.images import read_good_images
from careg_edge.calibration.threshold import calibrate, pick_units, threshold_at_fpr
from careg_edge.errors import UserInputError


def test_threshold_bounds_the_false_positive_rate():
    rng = np.random.default_rng(0)
    for n in (5, 50, 1000):
        good = rng.normal(size=n)
        for fpr in (0.01, 0.05, 0.2):
            t = threshold_at_fpr(good, fpr)
            assert t in good                       # an observed score
            assert (good > t).mean() <= fpr        # at most the target FPR above it
            assert (good >= t).mean() > fpr - 1e-12 or t == good.min()
    assert threshold_at_fpr(np.array([1.0, 3.0, 2.0]), 0.01) == 3.0  # few samples: the max


def test_calibrate_statistics():
    good = {0: np.array([1.0, 1.2]), 1: np.array([0.9, 1.1])}
    fake = {0: np.array([5.0, 1.0]), 1: np.array([0.5, 3.0])}
    c = calibrate([0, 1], good.__getitem__, fake.__getitem__, target_fpr=0.01)
    assert c["threshold"] == 1.2 and c["loo_fpr"] == 0.0
    assert c["expected_detection_rate"] == 0.5 and c["n_good"] == 4 and c["n_synthetic"] == 4


def test_pick_units_seeded_subset():
    units = np.repeat(np.arange(8), 3)
    a = pick_units(units, 4, seed=0)
    assert a == pick_units(units, 4, seed=0) and len(set(a)) == 4 and set(a) <= set(range(8))
    assert pick_units(np.array([0, 1, 1]), 4, 0) == [0, 1]


def test_read_good_images(tmp_path):
    from PIL import Image
    with pytest.raises(UserInputError, match="does not exist"):
        read_good_images(tmp_path / "nope")
    with pytest.raises(UserInputError, match="no images"):
        read_good_images(tmp_path)
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(UserInputError, match="b.png"):
        read_good_images(tmp_path)
    imgs, files = read_good_images(tmp_path, limit=1)
    assert imgs[0].shape == (5, 6, 3) and files[0].name == "a.png"
