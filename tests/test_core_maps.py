"""affine_sample / gaussian_blur / anomaly_map against torch grid_sample and SciPy."""
import numpy as np
import pytest

from careg_edge import _core
from careg_edge.errors import CaregError
from tests import reference as ref


def random_theta(B, seed=0):
    rng = np.random.default_rng(seed)
    ang = rng.uniform(-0.6, 0.6, B)
    s = rng.uniform(0.7, 1.3, B)
    t = rng.uniform(-0.3, 0.3, (B, 2))
    th = np.zeros((B, 2, 3), np.float32)
    th[:, 0, 0], th[:, 0, 1], th[:, 1, 0], th[:, 1, 1] = s * np.cos(ang), -s * np.sin(ang), s * np.sin(ang), s * np.cos(ang)
    th[:, :, 2] = t
    return th


def inverse(theta):
    full = np.concatenate([theta, np.tile([[[0, 0, 1]]], (len(theta), 1, 1))], 1).astype(np.float64)
    return np.linalg.inv(full)[:, :2].astype(np.float32)


def torch_sample(src, theta, out_h, out_w):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    th = torch.from_numpy(theta)
    grid = F.affine_grid(th, (src.shape[0], src.shape[1], out_h, out_w), align_corners=False)
    out = F.grid_sample(torch.from_numpy(src), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.numpy()


@pytest.mark.parametrize("B,C,h,w,oh,ow", [(1, 1, 56, 56, 224, 224), (4, 3, 28, 20, 31, 45), (2, 5, 7, 7, 7, 7)])
def test_affine_sample_matches_torch_grid_sample(B, C, h, w, oh, ow):
    src = np.random.default_rng(B).normal(size=(B, C, h, w)).astype(np.float32)
    theta = inverse(random_theta(B, seed=C))
    got = _core.affine_sample(src, theta, oh, ow)
    np.testing.assert_allclose(got, torch_sample(src, theta, oh, ow), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(got, ref.affine_sample(src, theta, oh, ow), rtol=1e-4, atol=2e-5)


def test_identity_theta_is_bilinear_resize():
    torch = pytest.importorskip("torch")
    src = np.random.default_rng(0).normal(size=(2, 3, 13, 17)).astype(np.float32)
    eye = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (2, 1, 1))
    want = torch.nn.functional.interpolate(torch.from_numpy(src), size=(40, 29), mode="bilinear",
                                           align_corners=False).numpy()
    np.testing.assert_allclose(_core.affine_sample(src, eye, 40, 29), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,sigma", [((2, 224, 224), 4.0), ((1, 9, 30), 4.0), ((3, 40, 33), 1.3), ((1, 5, 5), 0.0)])
def test_gaussian_blur_matches_scipy(shape, sigma):
    maps = np.random.default_rng(1).random(shape).astype(np.float32)
    np.testing.assert_allclose(_core.gaussian_blur(maps, sigma), ref.gaussian_blur(maps, sigma),
                               rtol=1e-4, atol=1e-6)


def test_gaussian_blur_equals_opencv_reflect():
    cv2 = pytest.importorskip("cv2")
    m = np.random.default_rng(2).random((1, 100, 80)).astype(np.float32)
    want = cv2.GaussianBlur(m[0], (33, 33), 4.0, borderType=cv2.BORDER_REFLECT)
    np.testing.assert_allclose(_core.gaussian_blur(m, 4.0)[0], want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("B,h,w,oh,ow,with_theta", [(3, 56, 56, 224, 224, True), (1, 28, 28, 100, 150, False),
                                                   (2, 14, 14, 20, 12, True)])
def test_anomaly_map_matches_chain(B, h, w, oh, ow, with_theta):
    reg = np.random.default_rng(3).random((B, h, w)).astype(np.float32)
    ti = inverse(random_theta(B, 4)) if with_theta else None
    maps, score = _core.anomaly_map(reg, ti, oh, ow, 4.0)
    rmaps, rscore = ref.anomaly_map(reg, ti, oh, ow, 4.0)
    np.testing.assert_allclose(maps, rmaps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(score, rscore, rtol=1e-4)
    np.testing.assert_array_equal(score, maps.reshape(B, -1).max(1))
    np.testing.assert_array_equal(maps, _core.anomaly_map(reg, ti, oh, ow, 4.0, threads=1)[0])


def test_anomaly_map_bad_inputs_and_nan():
    reg = np.ones((2, 8, 8), np.float32)
    reg[1, 3, 3] = np.nan
    maps, score = _core.anomaly_map(reg, None, 16, 16, 2.0)
    assert score[0] == pytest.approx(1.0) and np.isnan(score[1])
    m0, s0 = _core.anomaly_map(np.zeros((0, 8, 8), np.float32), None, 16, 16, 4.0)
    assert m0.shape == (0, 16, 16) and s0.shape == (0,)
    singular = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(CaregError, match="not invertible"):
        _core.anomaly_map(reg, singular, 16, 16, 4.0)
    bad = np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (2, 1, 1))
    bad[0, 0, 2] = np.inf
    with pytest.raises(CaregError, match="non-finite"):
        _core.anomaly_map(reg, bad, 16, 16, 4.0)
    with pytest.raises(CaregError, match=r"\[B, 2, 3\]"):
        _core.anomaly_map(reg, bad[:1].copy(), 16, 16, 4.0)
    with pytest.raises(CaregError, match="sigma"):
        _core.gaussian_blur(reg, -1.0)
    with pytest.raises(ValueError, match="float32"):
        _core.affine_sample(reg[:, None].astype(np.float64), bad, 4, 4)
