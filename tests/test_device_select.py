"""--device and --backend -> which runtime on which device (runtime/select.py), on a
CPU machine: the probes (ONNX Runtime's providers, the CUDA driver's device count,
torch.cuda) are monkeypatched to describe GPU machines, and InferenceSession is
wrapped to record the providers and options it is given."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
import onnxruntime  # noqa: E402

from careg_edge.cli import cli  # noqa: E402
from careg_edge.errors import EncoderMismatch, MissingDependency, UserInputError  # noqa: E402
from careg_edge.runtime import choose, devices, load_runtime  # noqa: E402
from careg_edge.runtime.devices import parse_device  # noqa: E402
from careg_edge.runtime.onnxruntime_backend import OnnxRuntime, session_providers  # noqa: E402
from test_runtime_onnxruntime import toy_onnx  # noqa: E402

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
ORT_GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
REAL_SESSION = onnxruntime.InferenceSession


@pytest.fixture
def toy(tmp_path):
    return str(toy_onnx(tmp_path / "toy.onnx"))


def machine(monkeypatch, providers=CPU_ONLY, gpus=0, trt_libs=False):
    """Describe the machine the probes see."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(providers))
    monkeypatch.setattr(devices, "cuda_device_count", lambda: gpus)
    monkeypatch.setattr(devices, "tensorrt_libs_present", lambda: trt_libs)


def torch_gpus(monkeypatch, n):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


class RecordingSession:
    """InferenceSession that records its providers and batch sizes and computes on the
    CPU; `started` is what get_providers reports (default: what was asked for)."""

    made: list = []
    started = None

    def __init__(self, path, opts=None, providers=None):
        self.providers, self.batches = providers, []
        self._real = REAL_SESSION(path, opts, providers=["CPUExecutionProvider"])
        RecordingSession.made.append(self)

    def get_providers(self):
        if RecordingSession.started is not None:
            return list(RecordingSession.started)
        return [p if isinstance(p, str) else p[0] for p in self.providers]

    def run(self, names, feeds):
        self.batches.append(int(feeds["image"].shape[0]))
        return self._real.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def recording(monkeypatch, tmp_path):
    RecordingSession.made, RecordingSession.started = [], None
    monkeypatch.setattr(onnxruntime, "InferenceSession", RecordingSession)
    monkeypatch.setenv("CAREG_CACHE_DIR", str(tmp_path / "cache"))
    return RecordingSession


# ---- parsing ---------------------------------------------------------------------------

def test_parse_device():
    assert parse_device("auto").kind == "auto" and parse_device("CPU").kind == "cpu"
    assert str(parse_device("cuda")) == "cuda:0" and parse_device("cuda").index is None
    assert parse_device("cuda:3").index == 3 and str(parse_device("cuda:3")) == "cuda:3"
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:x"):
        with pytest.raises(UserInputError, match="auto, cpu, cuda or cuda:N"):
            parse_device(bad)


def test_cli_backend_choices_are_the_runtimes():
    from careg_edge.cli_context import BACKENDS as CLI_BACKENDS
    from careg_edge.runtime import BACKENDS
    assert tuple(CLI_BACKENDS) == BACKENDS


# ---- the choice for an ONNX model ----------------------------------------------------

@pytest.mark.parametrize("providers,gpus,trt_libs,backend,device", [
    (CPU_ONLY, 0, False, "onnxruntime", "cpu"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], 1, False, "onnxruntime-cuda", "cuda:0"),
    (ORT_GPU, 2, True, "onnxruntime-tensorrt", "cuda:0"),
    (ORT_GPU, 1, False, "onnxruntime-cuda", "cuda:0"),   # EP listed, TensorRT libs absent
    (ORT_GPU, 0, True, "onnxruntime", "cpu"),            # onnxruntime-gpu on a machine without GPU
])
def test_auto_picks_the_fastest_ort_provider(monkeypatch, providers, gpus, trt_libs, backend, device):
    machine(monkeypatch, providers, gpus, trt_libs)
    c = choose("enc.onnx", "auto", "auto")
    assert (c.backend, c.device) == (backend, device)
    assert c.line().startswith(f"careg-edge: encoder runtime {backend} on {device} for enc.onnx: ")
    assert "\n" not in c.line()


def test_auto_prefers_an_engine_beside_the_onnx(monkeypatch, tmp_path):
    machine(monkeypatch, ORT_GPU, 1, True)
    (tmp_path / "enc.engine").write_bytes(b"x")
    monkeypatch.setattr("careg_edge.runtime.select._engine_beside",
                        lambda model, dev: str(tmp_path / "enc.engine"))
    c = choose(str(tmp_path / "enc.onnx"), "auto", "auto")
    assert (c.backend, c.device) == ("tensorrt", "cuda:0") and "enc.engine lies beside" in c.reason
    assert choose(str(tmp_path / "enc.onnx"), "auto", "cpu").backend == "onnxruntime"


def test_cuda_index_is_kept_and_checked(monkeypatch):
    machine(monkeypatch, ORT_GPU, 2, False)
    assert choose("enc.onnx", "auto", "cuda:1").device == "cuda:1"
    with pytest.raises(UserInputError, match=r"--device cuda:7: this machine has 2 CUDA devices "
                                             r"\(cuda:0 \.\. cuda:1\)"):
        choose("enc.onnx", "auto", "cuda:7")
    machine(monkeypatch, ORT_GPU, 1, False)
    with pytest.raises(UserInputError, match=r"has 1 CUDA device \(cuda:0\)$"):
        choose("enc.onnx", "onnxruntime", "cuda:1")


def test_cuda_without_a_gpu_provider_says_what_to_install(monkeypatch):
    machine(monkeypatch, CPU_ONLY, 1, False)
    with pytest.raises(MissingDependency) as e:
        choose("enc.onnx", "auto", "cuda")
    msg = str(e.value)
    assert "\n" not in msg and "pip install onnxruntime-gpu" in msg and "CPUExecutionProvider" in msg
    with pytest.raises(MissingDependency, match="no TensorrtExecutionProvider"):
        machine(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"], 1, False)
        choose("enc.onnx", "onnxruntime-tensorrt", "auto")
    machine(monkeypatch, ORT_GPU, 0, True)
    with pytest.raises(MissingDependency, match="CUDA driver sees no GPU"):
        choose("enc.onnx", "onnxruntime", "cuda")


def test_conflicting_backend_and_device(monkeypatch):
    machine(monkeypatch, ORT_GPU, 1, True)
    with pytest.raises(UserInputError, match="runs on the GPU"):
        choose("enc.onnx", "onnxruntime-cuda", "cpu")
    with pytest.raises(UserInputError, match="GPU only"):
        choose("enc.engine", "auto", "cpu")
    with pytest.raises(UserInputError, match="needs an .onnx"):
        choose("run.ckpt", "onnxruntime", "cuda")
    c = choose("enc.engine", "auto", "cuda:1")
    assert (c.backend, c.device, c.reason) == ("tensorrt", "cuda:1", "the model is a TensorRT engine")


# ---- the choice for torch models -----------------------------------------------------

def test_torch_models_follow_torch_cuda(monkeypatch):
    machine(monkeypatch, CPU_ONLY, 0, False)
    torch_gpus(monkeypatch, 0)
    c = choose("imagenet:efficientnet_lite0", "auto", "auto")
    assert (c.backend, c.device) == ("torch", "cpu") and "no CUDA GPU" in c.reason
    with pytest.raises(MissingDependency, match=r"torch.cuda.is_available\(\) is False"):
        choose("run.ckpt", "auto", "cuda")
    torch_gpus(monkeypatch, 2)
    assert choose("imagenet:efficientnet_lite0", "auto", "auto").device == "cuda:0"
    assert choose("run.ckpt", "torch", "cuda:1").device == "cuda:1"
    assert choose("run.ckpt", "auto", "cpu").device == "cpu"
    with pytest.raises(UserInputError, match="has 2 CUDA devices"):
        choose("imagenet:efficientnet_lite0", "auto", "cuda:7")


def test_open_choice_gives_torch_the_device(monkeypatch):
    import careg_edge.runtime.torch_backend as tb
    seen = {}

    class FakeTorchRuntime:
        def __init__(self, model, threads=0, device="cpu"):
            seen.update(model=model, threads=threads, device=device)
    monkeypatch.setattr(tb, "TorchRuntime", FakeTorchRuntime)
    torch_gpus(monkeypatch, 2)
    machine(monkeypatch, CPU_ONLY, 2, False)
    load_runtime("imagenet:efficientnet_lite0", device="cuda:1", threads=3, verbose=False)
    assert seen == {"model": "imagenet:efficientnet_lite0", "threads": 3, "device": "cuda:1"}


# ---- what InferenceSession is given ----------------------------------------------------

def test_session_providers_and_options(tmp_path, monkeypatch):
    monkeypatch.setenv("CAREG_CACHE_DIR", str(tmp_path))
    assert session_providers(None, 0) == ["CPUExecutionProvider"]
    assert session_providers("cuda", 2) == [("CUDAExecutionProvider", {"device_id": 2}),
                                            "CPUExecutionProvider"]
    trt, cuda, cpu = session_providers("tensorrt", 1, (224, 240))
    assert trt[0] == "TensorrtExecutionProvider" and cuda == ("CUDAExecutionProvider", {"device_id": 1})
    assert trt[1] == {"device_id": 1, "trt_fp16_enable": False, "trt_engine_cache_enable": True,
                      "trt_engine_cache_path": str(tmp_path / "ort-tensorrt"),
                      "trt_timing_cache_enable": True,
                      "trt_profile_min_shapes": "image:1x3x224x240",
                      "trt_profile_opt_shapes": "image:8x3x224x240",
                      "trt_profile_max_shapes": "image:32x3x224x240"}
    assert cpu == "CPUExecutionProvider"


def test_ort_cuda_session_gets_device_id(toy, monkeypatch, recording):
    machine(monkeypatch, ORT_GPU, 2, False)
    rt = load_runtime(toy, device="cuda:1", verbose=False)
    assert rt.name == "onnxruntime-cuda" and rt.device == "cuda:1"
    assert recording.made[-1].providers == [("CUDAExecutionProvider", {"device_id": 1}),
                                            "CPUExecutionProvider"]
    assert rt.info()["device"] == "cuda:1"


def test_ort_tensorrt_session_splits_batches_past_its_profile(toy, monkeypatch, recording):
    machine(monkeypatch, ORT_GPU, 1, True)
    rt = load_runtime(toy, verbose=False)
    assert rt.name == "onnxruntime-tensorrt"
    trt_opts = recording.made[-1].providers[0][1]
    assert trt_opts["device_id"] == 0 and trt_opts["trt_profile_max_shapes"] == "image:32x3x32x32"
    x = np.random.default_rng(0).standard_normal((70, 3, 32, 32)).astype(np.float32)
    got = rt.infer(x)
    assert recording.made[-1].batches == [32, 32, 6]
    ref = OnnxRuntime(toy).infer(x)   # (recorded too: a CPU session)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    np.testing.assert_allclose(got["feat1"][:, 0, 0, 0], x[:, 0, :4, :4].mean((1, 2)), rtol=1e-5)


def test_gpu_provider_that_falls_back_to_cpu_is_refused(toy, monkeypatch, recording):
    machine(monkeypatch, ORT_GPU, 1, False)
    recording.started = ["CPUExecutionProvider"]
    with pytest.raises(MissingDependency, match="could not start CUDAExecutionProvider on cuda:0"):
        load_runtime(toy, device="cuda", verbose=False)


def test_inspector_takes_the_device(toy, monkeypatch, recording):
    from careg_edge import Inspector
    machine(monkeypatch, ORT_GPU, 2, False)
    assert Inspector(model=toy, device="cpu").runtime.device == "cpu"
    assert recording.made[-1].providers == ["CPUExecutionProvider"]
    assert Inspector(model=toy, device="cuda:1").runtime.device == "cuda:1"
    with pytest.raises(UserInputError, match="cuda:2: this machine has 2 CUDA devices"):
        Inspector(model=toy, device="cuda:2")


# ---- the CLI ------------------------------------------------------------------------------

def _images(d, n=4, seed=0):
    import cv2
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(d / f"good_{i}.png"), (rng.random((48, 48, 3)) * 255).astype(np.uint8))
    return d


def test_cli_device_cpu_end_to_end(toy, tmp_path, monkeypatch):
    """--device cpu enroll + run with a real (toy) ONNX encoder: the log line names the
    choice, and the run scores every image against the profile's own threshold."""
    machine(monkeypatch, ORT_GPU, 1, True)   # a GPU is there, --device cpu keeps off it
    good = _images(tmp_path / "good")
    prof = tmp_path / "p.careg"
    r = CliRunner().invoke(cli, ["--device", "cpu", "enroll", "--support", str(good), "--model", toy,
                                 "--estimator", "padim", "--augment", "none", "-o", str(prof)])
    assert r.exit_code == 0, r.output
    assert f"encoder runtime onnxruntime on cpu for {toy}: --device cpu" in r.output
    r = CliRunner().invoke(cli, ["--device", "cpu", "--quiet", "run", "--profile", str(prof),
                                 "--model", toy, "--images", str(good)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(ln) for ln in r.output.splitlines() if ln.startswith("{")]
    assert len(lines) == 4 and all(np.isfinite(ln["score"]) for ln in lines)


def test_cli_auto_logs_one_line_with_the_reason(toy, tmp_path, monkeypatch, recording):
    machine(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"], 1, False)
    good = _images(tmp_path / "good")
    r = CliRunner().invoke(cli, ["enroll", "--support", str(good), "--model", toy, "--estimator",
                                 "padim", "--augment", "none", "-o", str(tmp_path / "p.careg")])
    assert r.exit_code == 0, r.output
    picked = [ln for ln in r.output.splitlines() if "encoder runtime" in ln]
    assert picked == [f"careg-edge: encoder runtime onnxruntime-cuda on cuda:0 for {toy}: "
                      "ONNX Runtime's CUDA EP is installed (no TensorRT EP libraries, no .engine)"]
    assert recording.made[0].providers[0] == ("CUDAExecutionProvider", {"device_id": 0})


@pytest.mark.parametrize("device,providers,expect", [
    ("cuda:7", ORT_GPU, "--device cuda:7: this machine has 1 CUDA device (cuda:0)"),
    ("cuda", CPU_ONLY, "pip install onnxruntime-gpu"),
])
def test_cli_device_errors_are_one_line(toy, tmp_path, monkeypatch, device, providers, expect):
    machine(monkeypatch, providers, 1, False)
    good = _images(tmp_path / "good", n=2)
    r = CliRunner().invoke(cli, ["--quiet", "--device", device, "enroll", "--support", str(good),
                                 "--model", toy, "-o", str(tmp_path / "p.careg")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("careg-edge: error: ") and expect in lines[0], r.output


def test_info_lists_what_was_found(monkeypatch):
    machine(monkeypatch, ORT_GPU, 1, True)
    monkeypatch.setattr(devices, "nvcc_version", lambda: "/usr/bin/nvcc (release 12.4)")
    monkeypatch.setattr(devices, "tensorrt_version", lambda: None)
    r = CliRunner().invoke(cli, ["info", "--json"])
    d = json.loads(r.output)
    assert d["cuda driver devices"] == "1" and d["nvcc"] == "/usr/bin/nvcc (release 12.4)"
    assert d["onnxruntime gpu EPs"] == "TensorrtExecutionProvider, CUDAExecutionProvider"
    assert d["tensorrt import"] == "no"
    assert d["auto picks for .onnx"].startswith("onnxruntime-tensorrt on cuda:0")


@pytest.mark.parametrize("device,script,extra", [("auto", "bench_e2e.py", []),
                                                  ("cuda:1", "bench_gpu.py", ["--device", "cuda:1"])])
def test_bench_verb_runs_the_script_of_the_device(monkeypatch, device, script, extra):
    import runpy
    import sys
    ran = {}
    monkeypatch.setattr(runpy, "run_path", lambda path, run_name: ran.update(path=path, argv=sys.argv))
    monkeypatch.setattr("careg_edge.commands.bench.BENCH_DIR", Path(__file__).resolve().parents[1] / "bench")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    r = CliRunner().invoke(cli, ["--device", device, "bench", "--n", "3"])
    assert r.exit_code == 0, r.output
    assert ran["path"].endswith("bench/" + script) and ran["argv"][1:] == extra + ["--n", "3"]


# ---- precision of the profile vs the encoder -----------------------------------------

def test_profile_precision_against_encoder():
    from careg_edge.runtime.precision import check_precision
    fp32 = {"encoder": {"extra": {}}}
    check_precision(fp32, {}, "p.careg")
    check_precision({"encoder": {"extra": {"precision": "int8"}}}, {"precision": "int8"}, "p.careg")
    with pytest.raises(EncoderMismatch, match="enrolled on a fp32 encoder, the loaded encoder "
                                              "runs int8.*re-enroll"):
        check_precision(fp32, {"precision": "int8"}, "p.careg")
    with pytest.raises(EncoderMismatch, match="enrolled on a int8-qdq encoder"):
        check_precision({"encoder": {"extra": {"precision": "int8-qdq"}}}, {}, "p.careg")
    with pytest.warns(UserWarning, match="enrolled on a fp32 encoder, scoring with fp16"):
        check_precision(fp32, {"precision": "fp16"}, "p.careg")


# ---- on a CUDA machine (marked gpu: skipped with the reason elsewhere) --------------------

@pytest.mark.gpu
def test_cli_device_cuda_matches_cpu(tmp_path):
    """`--device cuda` end to end with the torch backend: the log line names cuda:0 and
    the scores of a CPU-enrolled profile agree with `--device cpu` (TF32 convolutions
    and the GPU road's float order: 2e-3 relative)."""
    import cv2
    rng = np.random.default_rng(0)
    good = tmp_path / "good"
    good.mkdir()
    base = cv2.GaussianBlur((rng.random((224, 224, 3)) * 255).astype(np.uint8), (0, 0), 6)
    for i in range(6):
        img = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(good / f"good_{i}.png"), img)
    model, prof = "imagenet:efficientnet_lite0", str(tmp_path / "p.careg")
    r = CliRunner().invoke(cli, ["--device", "cpu", "enroll", "--support", str(good), "--model", model,
                                 "--estimator", "padim", "--augment", "none", "-o", prof])
    assert r.exit_code == 0, r.output
    scores = {}
    for device in ("cpu", "cuda"):
        r = CliRunner().invoke(cli, ["--device", device, "run", "--profile", prof, "--model", model,
                                     "--images", str(good)])
        assert r.exit_code == 0, r.output
        if device == "cuda":
            assert f"encoder runtime torch on cuda:0 for {model}: asked for" in r.output
        scores[device] = np.array([json.loads(ln)["score"] for ln in r.output.splitlines()
                                   if ln.startswith("{")])
    assert len(scores["cuda"]) == 6
    np.testing.assert_allclose(scores["cuda"], scores["cpu"], rtol=2e-3)
