"""Support augmentation ops and synthetic defects."""
import numpy as np
import pytest

from careg_edge import augment, synth
from careg_edge.errors import UserInputError


def _img(h=32, w=48):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_every_op_keeps_shape_and_dtype():
    img = _img(32, 32)
    for name, f in augment.OPS.items():
        out = f(img, [img[::-1]])
        assert out.shape == img.shape and out.dtype == np.uint8, name


def test_geometry_against_numpy():
    img = _img(32, 32)
    np.testing.assert_array_equal(augment.OPS["hflip"](img, []), img[:, ::-1])
    np.testing.assert_array_equal(augment.OPS["rot180"](img, []), img[::-1, ::-1])
    # a pi/2 rotation by warpAffine equals np.rot90 (square image, centre pivot)
    np.testing.assert_array_equal(augment.rotate(img, np.pi / 2), np.rot90(img))
    shifted = augment.translate(img, 0.25, 0.0)
    np.testing.assert_array_equal(shifted[:, 8:], img[:, :-8])
    g = augment.OPS["grey"](img, [])
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


def test_expand_names_and_errors():
    assert augment.expand("none") == []
    assert len(augment.expand("regad")) == 17
    assert augment.expand("flipping,grey") == ["hflip", "vflip", "grey"]
    assert len(augment.CANDIDATES) == 10
    with pytest.raises(UserInputError, match="unknown augmentation 'spin'"):
        augment.expand("spin")


def test_apply_order_is_op_major():
    imgs = [_img(), _img()[::-1].copy()]
    views = augment.apply(["hflip", "vflip"], imgs)
    assert len(views) == 4
    np.testing.assert_array_equal(views[1], imgs[1][:, ::-1])
    np.testing.assert_array_equal(views[2], imgs[0][::-1])


@pytest.mark.parametrize("kind", synth.KINDS)
def test_synthetic_defect_sizes(kind):
    img = np.full((100, 100, 3), 128, np.uint8)
    for seed in range(50):
        out, mask = synth.paste_defects(img, np.random.default_rng(seed), kind=kind)
        assert out.shape == img.shape and mask.any()
        assert mask.sum() <= 3 * 0.025 * 1e4 + 3 * 100  # <= 3 patches of <= 2.5 % (+rounding)
        assert (out[~mask] == img[~mask]).all()  # nothing outside the mask changes
