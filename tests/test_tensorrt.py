"""TensorRT: sidecar and calibration-cache logic (pure Python, run everywhere);
engine build and fp16 parity (run only where `tensorrt` imports and a GPU answers)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from careg_edge.calibration.tensorrt_calibrator import _pad, read_cache, write_cache
from careg_edge.errors import EncoderMismatch, FormatError, VersionMismatch
from careg_edge.export.tensorrt import parse_batch
from careg_edge.errors import UserInputError
from careg_edge.container import sha256_file
from careg_edge.runtime.tensorrt_backend import (check_sidecar, read_sidecar, sidecar_path,
                                                 write_sidecar)

DEVICE = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}


@pytest.fixture
def engine(tmp_path):
    e = tmp_path / "enc.engine"
    e.write_bytes(b"\x00plain engine bytes")
    write_sidecar(e, dict(DEVICE, onnx_sha256="a" * 64, onnx_file="enc.onnx", precision="fp16",
                          profile={"min": 1, "opt": 4, "max": 16}, encoder_meta={}))
    return e


def test_sidecar_round_trip_and_engine_stays_plain(engine):
    doc = read_sidecar(engine)
    assert sidecar_path(engine).name == "enc.engine.json"
    assert engine.read_bytes() == b"\x00plain engine bytes"
    assert doc["precision"] == "fp16" and doc["engine_sha256"] == sha256_file(engine)
    check_sidecar(doc, engine, DEVICE, onnx_hash="a" * 64, engine_hash=sha256_file(engine))


@pytest.mark.parametrize("key,value,what", [("tensorrt_version", "8.6.1", "TensorRT"),
                                            ("gpu_name", "RTX 4090", "GPU"),
                                            ("compute_capability", "8.9", "compute capability")])
def test_sidecar_refuses_other_machine(engine, key, value, what):
    with pytest.raises(VersionMismatch, match=f"built for {what} .* rebuild it"):
        check_sidecar(read_sidecar(engine), engine, dict(DEVICE, **{key: value}))


def test_sidecar_refuses_other_onnx_and_replaced_engine(engine):
    doc = read_sidecar(engine)
    with pytest.raises(EncoderMismatch, match="ONNX hash differs"):
        check_sidecar(doc, engine, DEVICE, onnx_hash="b" * 64)
    with pytest.raises(FormatError, match="does not match its sidecar"):
        check_sidecar(doc, engine, DEVICE, engine_hash="c" * 64)


def test_sidecar_missing_or_foreign(engine):
    sidecar_path(engine).write_text(json.dumps({"format": "other"}))
    with pytest.raises(FormatError, match="not a careg-edge engine sidecar"):
        read_sidecar(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(FormatError, match="sidecar missing"):
        read_sidecar(engine)


def test_calibration_cache_reused_only_for_same_onnx(tmp_path):
    p = tmp_path / "enc.calib"
    blob = b"TRT-8601-EntropyCalibration2\nimage: 3c010a14\n"
    write_cache(p, "a" * 64, blob)
    assert read_cache(p, "a" * 64) == blob
    assert read_cache(p, "b" * 64) is None
    p.write_bytes(p.read_bytes()[:-3])   # damaged cache = recalibrate, not fail
    assert read_cache(p, "a" * 64) is None
    assert read_cache(tmp_path / "absent.calib", "a" * 64) is None


def test_calibrator_pads_short_last_batch():
    b = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
    out = _pad(b, 8)
    assert out.shape == (8, 2) and (out[3] == b[0]).all() and (out[7] == b[1]).all()


def test_parse_batch():
    assert parse_batch("1,4,16") == (1, 4, 16) and parse_batch("8") == (1, 8, 8)
    for bad in ("4,1,16", "0,1,2", "a", "1,2"):
        with pytest.raises(UserInputError):
            parse_batch(bad)


def _trt_with_gpu():
    try:
        import tensorrt  # noqa: F401
        from careg_edge.runtime.tensorrt_backend import current_device
        current_device()
        return None
    except Exception as e:
        return f"TensorRT engine tests need `tensorrt` + cuda-python and a GPU ({e})"


def test_build_engine_without_tensorrt_is_one_line():
    if _trt_with_gpu() is None:
        pytest.skip("TensorRT and a GPU are present: the refusal path does not apply")
    out = subprocess.run([sys.executable, "-m", "careg_edge.cli", "build-engine", "x.onnx"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "ONNX Runtime" in lines[0]


@pytest.fixture
def gpu():
    reason = _trt_with_gpu()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_engine_build_and_parity(gpu, tmp_path, precision, tol):
    from careg_edge.export.onnx import export_onnx
    from careg_edge.export.tensorrt import build_engine
    from careg_edge.runtime.onnxruntime_backend import OnnxRuntime
    from careg_edge.runtime.tensorrt_backend import TensorRTRuntime
    onnx_path = export_onnx("imagenet:resnet18", tmp_path / "r18.onnx", imgsz=128, verbose=False)
    eng = build_engine(onnx_path, precision=precision, batch="1,4,8", workspace=1024,
                       timing_cache=str(tmp_path / "tc.bin"), verbose=False)
    assert (tmp_path / "tc.bin").is_file() and read_sidecar(eng)["precision"] == precision
    x = np.random.default_rng(0).standard_normal((4, 3, 128, 128)).astype(np.float32)
    ref, got = OnnxRuntime(onnx_path).infer(x), TensorRTRuntime(eng).infer(x)
    for k in ref:
        scale = max(1.0, float(np.abs(ref[k]).max()))
        assert np.abs(ref[k] - got[k]).max() <= tol * scale, k


def test_engine_refused_when_onnx_changed(gpu, tmp_path):
    from careg_edge.export.onnx import export_onnx
    from careg_edge.export.tensorrt import build_engine
    from careg_edge.runtime.tensorrt_backend import TensorRTRuntime
    onnx_path = export_onnx("imagenet:resnet18", tmp_path / "r18.onnx", imgsz=64, verbose=False)
    eng = build_engine(onnx_path, precision="fp16", batch="1,1,2", verbose=False)
    export_onnx("imagenet:resnet18", onnx_path, imgsz=96, verbose=False)
    with pytest.raises(EncoderMismatch):
        TensorRTRuntime(eng)
