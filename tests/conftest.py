"""Shared fixtures: real data by path (skipped with a reason when absent)."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# The development checkout keeps ImageNet weights beside the repository; the
# package finds them only through its documented search (CAREG_WEIGHTS_DIR, ...).
if (SHARED / "weights").is_dir():
    os.environ.setdefault("CAREG_WEIGHTS_DIR", str(SHARED / "weights"))


def shared_path(*parts) -> Path:
    """Path under ../shared/data, or skip the test naming what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is missing")
    return p


@pytest.fixture
def metal_plate() -> Path:
    return shared_path("mpdd", "metal_plate")


@pytest.fixture
def magnetic_tile() -> Path:
    return shared_path("magnetic_tile_defects", "magnetic_tile")


@pytest.fixture
def resnet50v2_weights() -> Path:
    return shared_path("weights", "resnet50v2_imagenet_stem_layer1-3.safetensors")


def _no_cuda_reason():
    """Why the `gpu` tests cannot run here, or None when torch sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return "gpu test: torch is not installed"
    if not torch.cuda.is_available():
        return "gpu test: no CUDA device (torch.cuda.is_available() is False)"
    return None


def pytest_collection_modifyitems(config, items):
    # CPU CI: every test marked gpu skips, with the reason, instead of failing.
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    reason = _no_cuda_reason() if gpu_items else None
    no_cuda = pytest.mark.skipif(reason is not None, reason=reason or "")
    for item in gpu_items:
        item.add_marker(no_cuda)
