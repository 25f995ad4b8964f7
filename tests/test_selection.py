"""Augmentation selection: Eq. 6 against a direct scipy.linalg.sqrtm computation,
KL against a Monte-Carlo estimate, and the mean-distance rule."""
import numpy as np
import pytest
from scipy import linalg

from careg_edge import selection


def _spd(rng, d, n=30):
    a = rng.normal(size=(n, d))
    return a.T @ a / n + 0.1 * np.eye(d)


def test_wasserstein_matches_sqrtm():
    rng = np.random.default_rng(0)
    for d in (1, 3, 8):
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        c1, c2 = _spd(rng, d), _spd(rng, d)
        r2 = linalg.sqrtm(c2)
        ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * linalg.sqrtm(r2 @ c1 @ r2)).real
        got = selection.wasserstein(m1[None], c1[None], m2[None], c2[None])[0]
        assert got == pytest.approx(np.sqrt(ref), rel=1e-8)
        # symmetric, and zero for identical Gaussians
        assert selection.wasserstein(m2[None], c2[None], m1[None], c1[None])[0] == pytest.approx(got, rel=1e-7)
        assert selection.wasserstein(m1[None], c1[None], m1[None], c1[None])[0] == pytest.approx(0, abs=1e-6)


def test_wasserstein_commuting_closed_form():
    # Diagonal covariances: W^2 = |dm|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    m = np.array([1.0, 0.0, 2.0])
    got = selection.wasserstein(m[None], np.diag(a)[None], np.zeros((1, 3)), np.diag(b)[None])[0]
    assert got == pytest.approx(np.sqrt(5 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()))


def test_kl_matches_univariate_formula_and_integral():
    from scipy import integrate
    from scipy.stats import norm
    m1, s1, m2, s2 = 0.3, 0.7, -0.4, 1.3
    ref = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
    num = integrate.quad(lambda x: norm.pdf(x, m1, s1) * (norm.logpdf(x, m1, s1)
                                                          - norm.logpdf(x, m2, s2)), -20, 20)[0]
    got = selection.kl(np.array([[m1]]), np.array([[[s1 ** 2]]]), np.array([[m2]]),
                       np.array([[[s2 ** 2]]]))[0]
    assert got == pytest.approx(ref, rel=1e-9) and got == pytest.approx(num, rel=1e-6)
    # diagonal covariances: KL adds up over independent coordinates
    mu1, v1, mu2, v2 = np.array([0.3, 1.0]), np.array([0.5, 2.0]), np.array([0.0, -1.0]), np.array([1.0, 1.5])
    per = np.log(np.sqrt(v2 / v1)) + (v1 + (mu1 - mu2) ** 2) / (2 * v2) - 0.5
    got = selection.kl(mu1[None], np.diag(v1)[None], mu2[None], np.diag(v2)[None])[0]
    assert got == pytest.approx(per.sum(), rel=1e-9)
    rng = np.random.default_rng(1)
    c1, c2 = _spd(rng, 3), _spd(rng, 3)
    m1, m2 = rng.normal(size=3), rng.normal(size=3)
    js = selection.js(m1[None], c1[None], m2[None], c2[None])[0]
    assert 0 < js < selection.kl(m1[None], c1[None], m2[None], c2[None])[0]


def test_foreground_weights_favour_the_object():
    mu = np.zeros((4, 2))
    mu[2] = [5.0, 0.0]  # one position differs from the image-wide mean
    w = selection.foreground_weights(mu)
    assert w.sum() == pytest.approx(1) and w.argmax() == 2


def test_distance_orders_shifts_and_choose_drops_far_groups():
    rng = np.random.default_rng(3)
    orig = rng.normal(size=(6, 4, 5))
    near = orig + 0.05 * rng.normal(size=orig.shape)
    far = orig + 2.0
    for method in selection.METHODS:
        dn = selection.distance(orig, near, method)
        df = selection.distance(orig, far, method)
        assert 0 <= dn < df
    d = {"a": 1.0, "b": 2.0, "c": 9.0}
    assert selection.choose(d) == ["a", "b"]


def test_pool_block_average():
    f = np.arange(2 * 16 * 3, dtype=np.float32).reshape(2, 16, 3)
    p = selection.pool(f, (4, 4), out=2)
    assert p.shape == (2, 4, 3)
    ref = f.reshape(2, 4, 4, 3)[:, :2, :2].mean(axis=(1, 2))
    np.testing.assert_allclose(p[:, 0], ref)
