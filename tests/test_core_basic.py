import numpy as np
import pytest

from careg_edge import _core


def test_pairwise_sqdist_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(17, 33)).astype(np.float32)
    b = rng.normal(size=(9, 33)).astype(np.float32)
    ref = ((a[:, None, :].astype(np.float64) - b[None]) ** 2).sum(-1)
    np.testing.assert_allclose(_core.pairwise_sqdist(a, b), ref, rtol=1e-5)


def test_rejects_wrong_dtype():
    a = np.zeros((2, 3))
    with pytest.raises(ValueError, match="float32"):
        _core.pairwise_sqdist(a, a.astype(np.float32))


def test_import_does_not_pull_torch():
    import subprocess
    import sys
    code = "import careg_edge, careg_edge._core, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
