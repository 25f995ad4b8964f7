"""The compiled core imports without torch. (Each core function is tested against
NumPy in its own file: test_core_knn, test_core_mahalanobis, test_core_maps, ...)"""
import subprocess
import sys


def test_import_does_not_pull_torch():
    code = "import careg_edge, careg_edge._core, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
