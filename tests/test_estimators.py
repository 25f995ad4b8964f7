"""Estimators against independent references: scipy Mahalanobis, brute-force kNN,
the greedy k-centre covering property, PatchCore's re-weighting formula. Fitting is
the estimators'; scoring is the compiled road's (`score` below calls it)."""
import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from careg_edge import _core, scoring
from careg_edge.estimators import make_estimator
from careg_edge.estimators.orthoad import semi_orthogonal
from careg_edge.estimators.padim import channel_subset
from careg_edge.estimators.patchcore import greedy_coreset
from careg_edge.errors import UserInputError


def score(est, q, tensors, grid, rule="max"):
    """(distances [B, P], image scores [B]) from the compiled road's scorer."""
    sc = scoring.scorer(est.name, tensors, est.params, grid, (grid[0] * 4, grid[1] * 4), 1.0, rule)
    res = _core.score(sc, np.ascontiguousarray(q, np.float32))
    return res["dist"].reshape(len(q), -1), res["scores"]


def _feats(n=12, p=6, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p, d)).astype(np.float32) * np.arange(1, d + 1, dtype=np.float32)


@pytest.mark.parametrize("name", ["padim", "orthoad"])
@pytest.mark.parametrize("fp16", [False, True])
def test_gaussian_estimators_match_scipy_mahalanobis(name, fp16):
    x = _feats()
    est = make_estimator(name, d=5, eps=0.01, fp16=fp16)
    fitted = est.fit(x, (2, 3), np.arange(len(x)))
    q = _feats(3, seed=1)
    got, _ = score(est, q, fitted.tensors, (2, 3))
    assert got.shape == (3, 6)
    for p in range(6):
        cov = np.cov(x[:, p].astype(np.float64), rowvar=False) + 0.01 * np.eye(5)
        vi = np.linalg.inv(cov)
        for b in range(3):
            ref = scipy_mahalanobis(q[b, p], x[:, p].mean(0), vi)
            assert got[b, p] == pytest.approx(ref, rel=2e-2 if fp16 else 1e-4)


def test_padim_factor_is_packed_cholesky_of_precision():
    x = _feats(d=4)
    t = make_estimator("padim", d=4).fit(x, (2, 3), np.arange(12)).tensors
    rows, cols = np.tril_indices(4)
    L = np.zeros((4, 4))
    L[rows, cols] = t["precision_factor"][0]
    cov = np.cov(x[:, 0].astype(np.float64), rowvar=False) + 0.01 * np.eye(4)
    np.testing.assert_allclose(L @ L.T, np.linalg.inv(cov), rtol=1e-4, atol=1e-5)
    assert t["precision_factor"].shape == (6, 10)


def test_single_sample_gives_eps_identity():
    x = _feats(n=1, d=3)
    t = make_estimator("padim", d=3, eps=0.25).fit(x, (2, 3), np.zeros(1, int)).tensors
    got, _ = score(make_estimator("padim", d=3), x + 1, t, (2, 3))
    np.testing.assert_allclose(got, np.sqrt(3 / 0.25), rtol=1e-5)


def test_channel_subset_and_projection_are_seeded():
    a, b = channel_subset(448, 100, 0), channel_subset(448, 100, 0)
    assert (a == b).all() and len(np.unique(a)) == 100 and a.dtype == np.int64
    assert not (a == channel_subset(448, 100, 1)).all()
    w = semi_orthogonal(64, 10, 0)
    np.testing.assert_allclose(w.T @ w, np.eye(10), atol=1e-5)


def test_coreset_k_centre_property():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)  # <= 64 dims: no projection
    idx, radius = greedy_coreset(x, 100, seed=0)
    assert len(np.unique(idx)) == 100
    d = np.sqrt(((x[:, None] - x[idx][None]) ** 2).sum(-1)).min(1)
    assert d.max() <= radius * (1 + 1e-4)          # every point within the radius
    assert d.max() >= radius * (1 - 1e-4)          # and the radius is attained
    # greedy 2-approximation: centres are pairwise >= radius apart
    c = x[idx]
    pd = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(100) * 1e9
    assert pd.min() >= radius * (1 - 1e-4)


def test_regional_coreset_covers_every_point():
    from careg_edge.estimators.patchcore import regional_coreset
    rng = np.random.default_rng(5)
    grid, n = (8, 8), 20
    x = rng.normal(size=(n * 64, 12)).astype(np.float32)
    pos = np.tile(np.arange(64), n)
    idx, radius = regional_coreset(x, pos, grid, 160, 4, seed=0)
    assert 150 <= len(idx) <= 170 and len(np.unique(idx)) == len(idx)
    d = np.sqrt(((x[:, None] - x[idx][None]) ** 2).sum(-1)).min(1)
    assert d.max() <= radius * (1 + 1e-4)
    # each 2x2-cell block keeps about its share
    blk = (pos[idx] // 8) // 2 * 4 + (pos[idx] % 8) // 2
    assert np.bincount(blk, minlength=16).min() >= 9


def test_coreset_projection_property_in_projected_space():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 200)).astype(np.float32)
    idx, radius = greedy_coreset(x, 50, seed=3)
    r = np.random.default_rng(3).standard_normal((200, 64)).astype(np.float32) / 8.0
    z = x @ r
    d = np.sqrt(((z[:, None] - z[idx][None]) ** 2).sum(-1)).min(1)
    assert d.max() <= radius * (1 + 1e-3)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(50, 24)).astype(np.float32)
    bank = rng.normal(size=(300, 24)).astype(np.float32)
    sq, idx = _core.knn(q, bank, 3)
    ref = ((q[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1)
    order = np.argsort(ref, axis=1)[:, :3]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(sq, np.take_along_axis(ref, order, 1), rtol=1e-4, atol=1e-4)


def _bank_setup():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 9, 8)).astype(np.float32)
    return x, rng


@pytest.mark.parametrize("search", ["global", "local"])
def test_patchcore_distances_brute_force(search):
    x, rng = _bank_setup()
    est = make_estimator("patchcore", d=8, gamma=1.0, search=search, radius=1)
    t = est.fit(x, (3, 3), np.arange(10)).tensors
    q = rng.normal(size=(2, 9, 8)).astype(np.float32)
    dist, img = score(est, q, t, (3, 3))
    bank, pos = t["bank"].astype(np.float64), t["bank_pos"]
    for b in range(2):
        for p in range(9):
            ok = np.ones(len(bank), bool) if search == "global" else \
                (np.abs(pos // 3 - p // 3) <= 1) & (np.abs(pos % 3 - p % 3) <= 1)
            ref = np.sqrt(((bank[ok] - q[b, p]) ** 2).sum(-1)).min()
            assert dist[b, p] == pytest.approx(ref, rel=1e-4)
    # re-weighting (PatchCore Eq. 7) recomputed by brute force, global search only
    if search == "global":
        for b in range(2):
            p = dist[b].argmax()
            dq = np.sqrt(((bank - q[b, p]) ** 2).sum(-1))
            m = dq.argmin()
            nb = np.argsort(((bank - bank[m]) ** 2).sum(-1))[:9]
            w = 1 - np.exp(dq[m]) / np.exp(dq[nb]).sum()
            assert img[b] == pytest.approx(w * dist[b, p], rel=1e-4)


def test_local_search_falls_back_where_the_window_is_empty():
    est = make_estimator("patchcore", d=4, search="local", radius=0)
    t = {"bank": np.eye(4, dtype=np.float32), "bank_pos": np.array([0, 0, 1, 1], np.int32)}
    q = np.full((1, 4, 4), 0.25, np.float32)
    dist, img = score(est, q, t, (2, 2))
    ref = np.sqrt(((t["bank"] - 0.25) ** 2).sum(-1)).min()
    np.testing.assert_allclose(dist, ref, rtol=1e-5)
    assert np.isfinite(img).all()


def test_patchcore_leave_one_out_refits_the_coreset():
    """Leave-one-out re-fits on the remaining images (a new coreset, not the old bank
    minus rows): the bank is gamma of the kept patches and holds none of group 1."""
    x, _ = _bank_setup()
    est = make_estimator("patchcore", d=8, gamma=0.5, regions=1)
    groups = np.arange(10) % 3
    f = est.fit(x, (3, 3), groups)
    assert len(f.tensors["bank"]) == 45
    lo = est.fit_without(x, (3, 3), groups, f, 1)
    kept = x[groups != 1].reshape(-1, 8)
    assert len(lo.tensors["bank"]) == int(np.ceil(0.5 * len(kept)))
    d = np.sqrt(((lo.tensors["bank"][:, None] - kept[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(d, 0, atol=1e-6)   # every bank row is a kept patch


def test_bad_options():
    with pytest.raises(UserInputError, match="estimator"):
        make_estimator("svm")
    with pytest.raises(UserInputError, match="search"):
        make_estimator("patchcore", search="fast")
    with pytest.raises(UserInputError, match="eps"):
        make_estimator("padim", eps=0)


@pytest.mark.parametrize("n", [1, 2, 9])
def test_gaussian_factor_in_core_matches_numpy_reference(n):
    from careg_edge.estimators.padim import gaussian_factor
    from tests import reference as ref
    x = _feats(n=n, p=7, d=6, seed=n)
    mean, fac = gaussian_factor(x, 0.05)
    rmean, rfac = ref.gaussian_factor(x, 0.05)
    np.testing.assert_allclose(mean, rmean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fac, rfac, rtol=1e-5, atol=1e-6)
    assert gaussian_factor(x, 0.05, half=True)[1].dtype == np.float16
    bad = x.copy()
    bad[0, 3, 2] = np.nan
    with pytest.raises(Exception, match="position 3 is not positive definite"):
        gaussian_factor(bad, 0.05)


def test_greedy_coreset_in_core_matches_numpy_reference():
    from tests import reference as ref
    z = np.random.default_rng(7).normal(size=(700, 64)).astype(np.float32)
    idx, rad = _core.greedy_coreset(z, 60, 11)
    ridx, rrad = ref.greedy_coreset(z, 60, 11)
    np.testing.assert_array_equal(idx, ridx)
    assert rad == pytest.approx(rrad, rel=1e-5)
