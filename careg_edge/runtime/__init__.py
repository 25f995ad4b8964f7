"""Encoder runtimes behind one interface; `load_runtime` picks one.

`model` may be:
  None                      the bundled default encoder (careg_edge/models/)
  "imagenet:<backbone>"     ImageNet backbone + identity STNs (needs torch; the
                            paper's "without CAReg" baseline)
  path/to/x.ckpt            a careg-edge training checkpoint (needs torch)
  path/to/x.onnx            an exported encoder (ONNX Runtime)
  path/to/x.engine          a TensorRT engine with its .engine.json sidecar
"""
from .base import OUTPUT_NAMES, Runtime  # noqa: F401

import sys as _sys
from pathlib import Path as _Path

BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-cuda", "tensorrt")
_MODELS_DIR = _Path(__file__).resolve().parent.parent / "models"


def load_runtime(model=None, backend: str = "auto", threads: int = 0, verbose: bool = True) -> Runtime:
    """Open `model` with `backend`; "auto" = TensorRT engine > ORT CUDA > ORT CPU.

    The choice and its reason are printed once to stderr (not when verbose=False).
    Only the chosen backend's module is imported, so ONNX Runtime never pulls in torch.
    """
    if backend not in BACKENDS:
        from ..errors import UserInputError
        raise UserInputError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    model = _resolve_default(model)
    kind, target = _kind(model)
    chosen, reason = (backend, "asked for") if backend != "auto" else _auto(kind, target)
    if verbose:
        print(f"careg-edge: encoder runtime {chosen} for {target}: {reason}", file=_sys.stderr)
    return _open(chosen, kind, target, threads)


def _resolve_default(model):
    if model is not None:
        return str(model)
    found = sorted(_MODELS_DIR.glob("*.onnx")) if _MODELS_DIR.is_dir() else []
    if not found:
        from ..errors import UserInputError
        raise UserInputError("no bundled encoder in careg_edge/models/: pass model= an .onnx "
                             "(careg-edge export), an .engine, a checkpoint or 'imagenet:<backbone>'")
    return str(found[0])


def _kind(model: str):
    if model.startswith("imagenet:"):
        return "torch", model
    suffix = _Path(model).suffix.lower()
    if suffix == ".onnx":
        return "onnx", model
    if suffix == ".engine":
        return "engine", model
    return "checkpoint", model


def _gpu_ready() -> bool:
    """TensorRT + cuda-python import and a GPU answers; never raises."""
    import importlib.util
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        from .tensorrt_backend import current_device
        current_device()
        return True
    except Exception:
        return False


def _auto(kind: str, target: str):
    if kind in ("torch", "checkpoint"):
        return "torch", "a training checkpoint runs in torch (export it to ONNX for deployment)"
    if kind == "engine":
        return "tensorrt", "the model is a TensorRT engine"
    engine = _Path(target).with_suffix(".engine")
    if engine.is_file() and _gpu_ready():
        return "tensorrt", f"{engine.name} lies beside the ONNX and TensorRT + a GPU are present"
    from .onnxruntime_backend import cuda_available
    if cuda_available():
        return "onnxruntime-cuda", "the ONNX Runtime CUDA execution provider is installed"
    return "onnxruntime", "no GPU runtime installed; ONNX Runtime on the CPU is the default"


def _open(chosen: str, kind: str, target: str, threads: int) -> Runtime:
    from ..errors import UserInputError
    if chosen == "tensorrt":
        from .tensorrt_backend import TensorRTRuntime
        engine = target if kind == "engine" else str(_Path(target).with_suffix(".engine"))
        return TensorRTRuntime(engine)
    if chosen.startswith("onnxruntime"):
        if kind != "onnx":
            raise UserInputError(f"{target}: backend {chosen} needs an .onnx; "
                                 f"run `careg-edge export {target}` first")
        from .onnxruntime_backend import OnnxRuntime
        return OnnxRuntime(target, device="cuda" if chosen.endswith("cuda") else "cpu",
                           threads=threads)
    if kind not in ("torch", "checkpoint"):
        raise UserInputError(f"{target}: the torch backend takes a checkpoint or "
                             "'imagenet:<backbone>'; use backend='onnxruntime' for .onnx")
    from .torch_backend import TorchRuntime
    return TorchRuntime(target, threads=threads)
