"""Parity of _core.mahalanobis with the NumPy einsum oracle (tests/reference.py)."""
import numpy as np
import pytest

from careg_edge import _core
from careg_edge.errors import CaregError
from tests import reference as ref


def gaussian_profile(P, D, seed=0):
    """A random per-position Gaussian: mean and a well-conditioned packed factor."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(P, D)).astype(np.float32)
    L = np.tril(rng.normal(scale=0.3 / np.sqrt(D), size=(P, D, D)))
    L[:, np.arange(D), np.arange(D)] = rng.uniform(0.5, 1.5, size=(P, D))
    return mean, ref.pack_factor(L)


@pytest.mark.parametrize("B,P,D", [(1, 3136, 100), (8, 3136, 100), (3, 196, 448), (2, 5, 1)])
def test_matches_reference_f32(B, P, D):
    mean, factor = gaussian_profile(P, D, seed=B + D)
    x = (mean + np.random.default_rng(1).normal(size=(B, P, D))).astype(np.float32)
    np.testing.assert_allclose(_core.mahalanobis(x, mean, factor), ref.mahalanobis(x, mean, factor),
                               rtol=1e-4)


@pytest.mark.parametrize("B,D", [(1, 448), (8, 100)])
def test_matches_reference_f16_factor(B, D):
    mean, factor = gaussian_profile(64, D, seed=3)
    f16 = factor.astype(np.float16)
    x = np.random.default_rng(2).normal(size=(B, 64, D)).astype(np.float32)
    got = _core.mahalanobis(x, mean, f16)
    np.testing.assert_allclose(got, ref.mahalanobis(x, mean, f16), rtol=1e-4)
    # fp16 storage is an approximation of the fp32 profile, not a different one
    np.testing.assert_allclose(got, _core.mahalanobis(x, mean, factor), rtol=5e-3)


def test_thread_counts_agree_and_identity_factor_is_euclidean():
    P, D = 40, 16
    mean = np.zeros((P, D), np.float32)
    factor = ref.pack_factor(np.broadcast_to(np.eye(D), (P, D, D)).copy())
    x = np.random.default_rng(0).normal(size=(4, P, D)).astype(np.float32)
    one = _core.mahalanobis(x, mean, factor, threads=1)
    np.testing.assert_allclose(one, np.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_array_equal(one, _core.mahalanobis(x, mean, factor, threads=3))


def test_batch_larger_than_one_slice():
    mean, factor = gaussian_profile(9, 12)
    x = np.random.default_rng(5).normal(size=(37, 9, 12)).astype(np.float32)
    np.testing.assert_allclose(_core.mahalanobis(x, mean, factor), ref.mahalanobis(x, mean, factor),
                               rtol=1e-4)


def test_zero_batch_and_nonfinite_features():
    mean, factor = gaussian_profile(6, 8)
    assert _core.mahalanobis(np.zeros((0, 6, 8), np.float32), mean, factor).shape == (0, 6)
    x = np.zeros((2, 6, 8), np.float32)
    x[1, 2, 3] = np.nan
    x[0, 4, 0] = np.inf
    d = _core.mahalanobis(x, mean, factor)
    assert np.isnan(d[1, 2]) and not np.isfinite(d[0, 4])
    finite = np.ones_like(d, bool)
    finite[1, 2] = finite[0, 4] = False
    assert np.isfinite(d[finite]).all()  # the damage stays at its own position


def test_bad_inputs():
    mean, factor = gaussian_profile(6, 8)
    x = np.zeros((2, 6, 8), np.float32)
    with pytest.raises(ValueError, match="float32"):
        _core.mahalanobis(x.astype(np.float64), mean, factor)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.mahalanobis(np.zeros((2, 8, 6), np.float32).transpose(0, 2, 1), mean, factor)
    with pytest.raises(ValueError, match="dimensions"):
        _core.mahalanobis(x[0], mean, factor)
    with pytest.raises(CaregError, match="mean must be"):
        _core.mahalanobis(x, mean[:5].copy(), factor)
    with pytest.raises(CaregError, match="factor must be"):
        _core.mahalanobis(x, mean, factor[:, :-1].copy())
    with pytest.raises(CaregError, match="threads"):
        _core.mahalanobis(x, mean, factor, threads=-1)
