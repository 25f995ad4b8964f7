"""Which encoder runtime, on which device: `choose` decides (and says why),
`open_choice` opens it.

`--device auto` takes the fastest runtime this machine can run the model with:
TensorRT engine > ONNX Runtime's TensorRT EP > ONNX Runtime's CUDA EP > torch on
CUDA > the CPU. A model only runs where its format can: an .engine only on a GPU
with TensorRT, an .onnx in ONNX Runtime (or as the engine built beside it), a
checkpoint or `imagenet:` name in torch. `--device cuda[:N]` insists on the GPU
and says in one line what to install when it cannot have it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingDependency, UserInputError
from . import devices
from .devices import Device, parse_device

BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
ORT_GPU_HINT = ("pip uninstall onnxruntime && pip install onnxruntime-gpu "
                "(its CUDA EP; the TensorRT EP also needs TensorRT's libraries)")


@dataclass(frozen=True)
class Choice:
    backend: str     # one of BACKENDS except "auto"
    device: str      # "cpu" or "cuda:N"
    kind: str        # "torch" | "checkpoint" | "onnx" | "engine"
    target: str      # the model path/name the runtime opens
    reason: str

    def line(self) -> str:
        """The one line the CLI prints about the choice."""
        return f"careg-edge: encoder runtime {self.backend} on {self.device} for {self.target}: {self.reason}"


def model_kind(model: str) -> str:
    if model.startswith("imagenet:"):
        return "torch"
    suffix = Path(model).suffix.lower()
    return {".onnx": "onnx", ".engine": "engine"}.get(suffix, "checkpoint")


def choose(model: str, backend: str = "auto", device="auto") -> Choice:
    """The runtime and device for `model`; raises one line when they cannot be had."""
    if backend not in BACKENDS:
        raise UserInputError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    dev = parse_device(device)
    kind = model_kind(model)
    if backend == "auto":
        backend = {"engine": "tensorrt", "onnx": "onnxruntime"}.get(kind, "torch")
        if kind == "onnx" and dev.kind != "cpu":
            engine = _engine_beside(model, dev)
            if engine:
                return Choice("tensorrt", str(Device("cuda", dev.ordinal)), kind, model,
                              f"{Path(engine).name} lies beside the ONNX and TensorRT + a GPU answer")
    if backend == "tensorrt":
        return _tensorrt(model, kind, dev)
    if backend.startswith("onnxruntime"):
        return _onnxruntime(model, kind, backend, dev)
    return _torch(model, kind, dev)


def _engine_beside(model: str, dev: Device):
    engine = Path(model).with_suffix(".engine")
    if engine.is_file() and devices.tensorrt_version() is not None:
        try:
            from .tensorrt_backend import current_device
            current_device(index=dev.ordinal)
            return str(engine)
        except Exception:   # no cuda-python or no GPU: the ONNX runs elsewhere
            return None
    return None


def _tensorrt(model: str, kind: str, dev: Device) -> Choice:
    if kind not in ("engine", "onnx"):
        raise UserInputError(f"{model}: TensorRT runs an .engine (or the .engine beside an "
                             f".onnx); build one: careg-edge export {model} --format engine")
    if dev.kind == "cpu":
        raise UserInputError(f"{model}: a TensorRT engine runs on a GPU only; with --device cpu "
                             "run the .onnx in ONNX Runtime (--backend onnxruntime)")
    why = "the model is a TensorRT engine" if kind == "engine" else "asked for"
    return Choice("tensorrt", str(Device("cuda", dev.ordinal)), kind, model, why)


def _onnxruntime(model: str, kind: str, backend: str, dev: Device) -> Choice:
    if kind != "onnx":
        raise UserInputError(f"{model}: backend {backend} needs an .onnx; "
                             f"run `careg-edge export {model}` first")
    wanted = {"onnxruntime-cuda": devices.ORT_CUDA,
              "onnxruntime-tensorrt": devices.ORT_TENSORRT}.get(backend)
    if dev.kind == "cpu":
        if wanted:
            raise UserInputError(f"--backend {backend} runs on the GPU, --device cpu asks for the "
                                 "CPU: use --backend onnxruntime with --device cpu")
        return Choice("onnxruntime", "cpu", kind, model, "--device cpu")
    gpu = devices.ort_gpu_providers()
    if wanted:
        gpu = [p for p in gpu if p == wanted]
    count = devices.cuda_device_count() if gpu else 0
    if not gpu or count == 0:
        if dev.kind == "cuda" or wanted:
            raise MissingDependency(_ort_missing(dev, wanted, count, bool(gpu)))
        return Choice("onnxruntime", "cpu", kind, model,
                      "no GPU execution provider in ONNX Runtime or no CUDA GPU "
                      "(onnxruntime-gpu adds them); ONNX Runtime on the CPU")
    devices.check_index(dev, count, "the CUDA driver")
    where = str(Device("cuda", dev.ordinal))
    if gpu[0] == devices.ORT_TENSORRT:
        return Choice("onnxruntime-tensorrt", where, kind, model,
                      "ONNX Runtime's TensorRT EP and TensorRT's libraries are installed "
                      "(no .engine beside the ONNX)")
    return Choice("onnxruntime-cuda", where, kind, model,
                  "ONNX Runtime's CUDA EP is installed (no TensorRT EP libraries, no .engine)")


def _ort_missing(dev: Device, wanted, count: int, has_ep: bool) -> str:
    if has_ep and count == 0:
        return f"--device {dev}: ONNX Runtime has its GPU providers but the CUDA driver sees no GPU"
    name = wanted or "a CUDA or TensorRT execution provider"
    have = ", ".join(devices.ort_providers()) or "onnxruntime not installed"
    return f"--device {dev}: ONNX Runtime here has no {name} (it has: {have}); {ORT_GPU_HINT}"


def _torch(model: str, kind: str, dev: Device) -> Choice:
    if kind not in ("torch", "checkpoint"):
        raise UserInputError(f"{model}: the torch backend takes a checkpoint or "
                             "'imagenet:<backbone>'; use --backend onnxruntime for .onnx")
    if dev.kind == "cpu":
        return Choice("torch", "cpu", kind, model, "--device cpu")
    count = devices.torch_cuda_count()
    if dev.kind == "cuda":
        if count == 0:
            raise MissingDependency(f"--device {dev}: torch here has no CUDA "
                                    "(torch.cuda.is_available() is False); install a CUDA build "
                                    "of torch or use --device cpu")
        devices.check_index(dev, count, "torch")
        return Choice("torch", str(dev if dev.index is not None else Device("cuda", 0)), kind,
                      model, "asked for")
    if count:
        return Choice("torch", "cuda:0", kind, model,
                      "a checkpoint runs in torch and torch sees a CUDA GPU")
    return Choice("torch", "cpu", kind, model,
                  "a checkpoint runs in torch and torch has no CUDA GPU here "
                  "(export it to ONNX for deployment)")


def open_choice(choice: Choice, threads: int = 0):
    """The Runtime for a Choice (imports only that backend's module)."""
    if choice.backend == "tensorrt":
        from .tensorrt_backend import TensorRTRuntime
        engine = (choice.target if choice.kind == "engine"
                  else str(Path(choice.target).with_suffix(".engine")))
        return TensorRTRuntime(engine, device=choice.device)
    if choice.backend.startswith("onnxruntime"):
        from .onnxruntime_backend import OnnxRuntime
        provider = "tensorrt" if choice.backend.endswith("tensorrt") else "cuda"
        return OnnxRuntime(choice.target, device=choice.device, threads=threads,
                           provider=provider if choice.device != "cpu" else None)
    from .torch_backend import TorchRuntime
    return TorchRuntime(choice.target, threads=threads, device=choice.device)


def auto_summary() -> dict:
    """What `--device auto` would pick here for each kind of model (for `careg-edge info`)."""
    out = {}
    for label, model in ((".onnx", "model.onnx"), ("checkpoint", "model.ckpt")):
        try:
            c = choose(model, "auto", "auto")
            out[label] = f"{c.backend} on {c.device} ({c.reason})"
        except Exception as e:   # info reports, it never fails
            out[label] = f"none ({e})"
    return out
