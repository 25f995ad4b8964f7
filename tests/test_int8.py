"""INT8 (static QDQ, ONNX Runtime CPU): runs, keeps the careg-edge metadata, and its
features stay within the cosine bound measured for the trunk this project ships
(ResNet-50 v2, ImageNet weights). Calibration uses good images only."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from PIL import Image  # noqa: E402

from conftest import shared_path  # noqa: E402
from test_export import make_encoder  # noqa: E402
from test_runtime_onnxruntime import toy_onnx  # noqa: E402

from careg_edge.calibration.int8 import (calibration_images, feature_agreement,  # noqa: E402
                                         quantize)
from careg_edge.errors import UserInputError, WrongKind  # noqa: E402
from careg_edge.export.onnx import export_onnx  # noqa: E402
from careg_edge.runtime.onnxruntime_backend import OnnxRuntime, read_meta  # noqa: E402

SIZE = 64
# Measured (ResNet-50 v2 trunk, rotation_scale STNs, 16 calibration images):
# synthetic textures 64-96 px: feature cosine mean >= 0.998, theta within 1e-4;
# MPDD metal_plate 96 px: mean 0.985-0.991, min 0.92, theta within 4e-4.
# Bounds below leave margin for calibration-set and BLAS differences.
COS_MEAN, COS_MIN, THETA_ABS = 0.97, 0.85, 2e-3


def good_folder(path, n=12, size=80, seed=0):
    """Textured 'good parts': the same pattern, shifted, plus sensor noise."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        r = 128 + 60 * np.sin(xx / 5.0 + i * 0.3) * np.cos(yy / 7.0)
        g = 110 + 40 * np.sin((xx + yy) / 9.0)
        img = np.stack([r, g, np.full_like(r, 90.0)], -1) + rng.normal(0, 6, (size, size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path / f"good_{i:02d}.png")
    return path


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    # the bound is measured on real ImageNet weights; random ones would say nothing
    shared_path("weights", "resnet50v2_imagenet_stem_layer1-3.safetensors")
    enc = make_encoder("resnet50v2", size=SIZE)
    return export_onnx(enc, tmp_path_factory.mktemp("int8") / "r50.onnx", verbose=False)


def _agreement(fp32_path, int8_path, images):
    a, b = OnnxRuntime(fp32_path, threads=2), OnnxRuntime(int8_path, threads=2)
    return feature_agreement(a.infer(images), b.infer(images))


def _check(ag):
    print({k: round(v, 5) for k, v in ag.items()})
    for k in ("feat1", "feat2", "feat3"):
        assert ag[f"{k}_cos_mean"] >= COS_MEAN, ag
        assert ag[f"{k}_cos_min"] >= COS_MIN, ag
    assert ag["theta_max_abs"] <= THETA_ABS and ag["theta_inv_max_abs"] <= THETA_ABS, ag


def test_int8_runs_keeps_metadata_and_stays_close(fp32, tmp_path):
    good = good_folder(tmp_path / "good")
    q = quantize(fp32, good, tmp_path / "r50.int8.onnx", num_calib=12)
    meta, qmeta = read_meta(fp32), read_meta(q)
    assert qmeta.encoder_hash == meta.encoder_hash and qmeta.input_size == meta.input_size
    assert qmeta.extra["precision"] == "int8-qdq"
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "GridSample"} <= ops
    test = calibration_images(good_folder(tmp_path / "test", n=4, seed=1), meta)
    _check(_agreement(fp32, q, test))


def test_int8_on_real_good_images(fp32, tmp_path, metal_plate):
    q = quantize(fp32, metal_plate / "train" / "good", tmp_path / "r50.int8.onnx", num_calib=16)
    test = calibration_images(metal_plate / "test" / "good", read_meta(fp32), num_images=8)
    _check(_agreement(fp32, q, test))


def test_calibration_folder_without_readable_images(fp32, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    with pytest.raises(UserInputError, match="no readable images"):
        quantize(fp32, bad, tmp_path / "x.onnx")
    with pytest.raises(UserInputError, match="no images found"):
        quantize(fp32, tmp_path, tmp_path / "x.onnx")


def test_foreign_onnx_refused_before_calibration(tmp_path):
    p = toy_onnx(tmp_path / "foreign.onnx", with_meta=False)
    with pytest.raises(WrongKind):
        quantize(p, tmp_path, tmp_path / "x.onnx")


def test_cli_export_onnx_int8(tmp_path):
    import subprocess
    import sys
    good = good_folder(tmp_path / "good", n=4)
    out = subprocess.run([sys.executable, "-m", "careg_edge.cli", "export", "imagenet:mobilenet_v2",
                          "--format", "onnx-int8", "--imgsz", "64", "--calib", str(good),
                          "-o", str(tmp_path / "m.int8.onnx")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    line, = out.stdout.strip().splitlines()
    assert "m.int8.onnx" in line and "INT8" in line and "next: careg-edge" in line
    assert read_meta(tmp_path / "m.int8.onnx").extra["precision"] == "int8-qdq"
    assert read_meta(tmp_path / "m.onnx").input_size == (64, 64)   # the FP32 kept beside it
    missing = subprocess.run([sys.executable, "-m", "careg_edge.cli", "export", "imagenet:mobilenet_v2",
                              "--format", "onnx-int8"], capture_output=True, text=True)
    assert missing.returncode != 0 and "needs --calib" in missing.stderr
