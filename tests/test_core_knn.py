"""_core.knn / knn_local against brute force (tests/reference.py)."""
import numpy as np
import pytest

from careg_edge import _core
from careg_edge.errors import CaregError
from tests import reference as ref


@pytest.mark.parametrize("N,M,D,k", [(3136, 313, 100, 1), (500, 777, 448, 9), (7, 5, 3, 5), (1, 17, 33, 3)])
def test_knn_matches_brute_force(N, M, D, k):
    rng = np.random.default_rng(N + M)
    bank = rng.normal(size=(M, D)).astype(np.float32)
    q = rng.normal(size=(N, D)).astype(np.float32)
    d, i = _core.knn(q, bank, k)
    rd, ri = ref.knn(q, bank, k)
    assert d.dtype == np.float32 and i.dtype == np.int64 and d.shape == (N, k)
    np.testing.assert_allclose(d, rd, rtol=1e-4, atol=1e-5)
    # Indices must be exact except where two bank rows are closer than float32
    # can tell apart (a numerical tie): there the swapped row must be as near.
    diff = i != ri
    assert diff.mean() < 0.01
    exact = ((q[np.nonzero(diff)[0]].astype(np.float64) - bank[i[diff]]) ** 2).sum(-1)
    np.testing.assert_allclose(exact, rd[diff], rtol=1e-5)


def test_knn_exact_match_is_zero_and_ties_prefer_lower_index():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(40, 64)).astype(np.float32) * 100
    bank[30] = bank[7]  # duplicate row: a tie
    d, i = _core.knn(bank[[7, 3]].copy(), bank, 2)
    assert (d >= 0).all()
    np.testing.assert_array_equal(i[0], [7, 30])
    np.testing.assert_array_equal(d[0], [0, 0])
    assert i[1, 0] == 3 and d[1, 0] == 0


def test_knn_nonfinite():
    bank = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    bank[2] = np.nan
    q = np.stack([bank[2], bank[5]]).astype(np.float32)
    q[0] = np.nan
    d, i = _core.knn(q, bank, 3)
    assert np.isnan(d[0]).all() and (i[0] == -1).all()
    assert i[1, 0] == 5 and 2 not in i[1]


def test_knn_threads_agree_and_errors():
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(100, 20)).astype(np.float32)
    q = rng.normal(size=(300, 20)).astype(np.float32)
    a, b = _core.knn(q, bank, 4, threads=1), _core.knn(q, bank, 4, threads=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert _core.knn(q[:0], bank, 2)[0].shape == (0, 2)
    with pytest.raises(CaregError, match="k must be"):
        _core.knn(q, bank, 101)
    with pytest.raises(CaregError, match="D="):
        _core.knn(q[:, :5].copy(), bank, 1)
    with pytest.raises(ValueError, match="float32"):
        _core.knn(q.astype(np.float16), bank, 1)


@pytest.mark.parametrize("B,gh,gw,D,radius,k", [(2, 14, 14, 100, 1, 3), (1, 7, 9, 16, 0, 2), (3, 5, 5, 8, 3, 4)])
def test_knn_local_matches_reference(B, gh, gw, D, radius, k):
    rng = np.random.default_rng(gh * gw + D)
    P = gh * gw
    M = 3 * P // 2
    bank = rng.normal(size=(M, D)).astype(np.float32)
    bank_pos = rng.integers(0, P, size=M).astype(np.int32)
    q = rng.normal(size=(B, P, D)).astype(np.float32)
    d, i = _core.knn_local(q, bank, bank_pos, gh, gw, radius, k)
    rd, ri = ref.knn_local(q, bank, bank_pos, gh, gw, radius, k)
    np.testing.assert_array_equal(i, ri)  # includes -1 where a cell has < k candidates
    np.testing.assert_allclose(d, rd, rtol=1e-4, atol=1e-5)


def test_knn_local_errors():
    q = np.zeros((1, 6, 4), np.float32)
    bank = np.zeros((3, 4), np.float32)
    with pytest.raises(CaregError, match="grid"):
        _core.knn_local(q, bank, np.array([0, 1, 9], np.int32), 2, 3, 1, 1)
    with pytest.raises(CaregError, match="must equal"):
        _core.knn_local(q, bank, np.array([0, 1, 2], np.int32), 2, 2, 1, 1)
    with pytest.raises(ValueError, match="int32"):
        _core.knn_local(q, bank, np.array([0, 1, 2]), 2, 3, 1, 1)
