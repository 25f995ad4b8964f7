"""Encoder runtimes behind one interface; `load_runtime` picks one (runtime/select.py).

`model` may be:
  None                      the bundled default encoder (careg_edge/models/)
  "imagenet:<backbone>"     ImageNet backbone + identity STNs (needs torch; the
                            paper's "without CAReg" baseline)
  path/to/x.ckpt            a careg-edge training checkpoint (needs torch)
  path/to/x.onnx            an exported encoder (ONNX Runtime: CPU, CUDA or TensorRT EP)
  path/to/x.engine          a TensorRT engine with its .engine.json sidecar
"""
from .base import OUTPUT_NAMES, Runtime  # noqa: F401
from .select import BACKENDS, Choice, choose, open_choice  # noqa: F401

import sys as _sys
from pathlib import Path as _Path

_MODELS_DIR = _Path(__file__).resolve().parent.parent / "models"


def load_runtime(model=None, backend: str = "auto", threads: int = 0, verbose: bool = True,
                 device: str = "auto") -> Runtime:
    """Open `model` with `backend` on `device` ("auto", "cpu", "cuda", "cuda:N").

    "auto" = TensorRT engine > ORT TensorRT EP > ORT CUDA EP > torch CUDA > CPU, among
    what can run the model. The choice and its reason are printed once to stderr (not
    when verbose=False). Only the chosen backend's module is imported, so ONNX Runtime
    never pulls in torch.
    """
    choice = choose(resolve_default(model), backend, device)
    if verbose:
        print(choice.line(), file=_sys.stderr)
    return open_choice(choice, threads)


def resolve_default(model) -> str:
    """`model` as a string; None = the bundled encoder."""
    if model is not None:
        return str(model)
    found = sorted(_MODELS_DIR.glob("*.onnx")) if _MODELS_DIR.is_dir() else []
    if not found:
        from ..errors import UserInputError
        raise UserInputError("no bundled encoder in careg_edge/models/: pass model= an .onnx "
                             "(careg-edge export), an .engine, a checkpoint or 'imagenet:<backbone>'")
    return str(found[0])
