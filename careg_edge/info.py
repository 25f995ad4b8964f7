"""What is installed: the answer to `careg-edge info`."""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import platform


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def _core() -> dict:
    try:
        from . import _core
        return {"core": "ok", "core build flags": _core.build_flags() or "(portable)",
                "core threads (default)": str(_core.default_threads())}
    except ImportError as e:
        return {"core": f"NOT BUILT ({e})"}


def _cuda() -> str:
    # Only ask torch if it is installed; never import it otherwise (slow, optional).
    if importlib.util.find_spec("torch") is None:
        return "unknown (torch not installed)"
    import torch
    if torch.cuda.is_available():
        return f"yes: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return "no"


def collect() -> dict:
    from .version import __version__
    out = {"careg-edge": __version__, "python": platform.python_version(),
           "machine": f"{platform.system()} {platform.machine()}", "cpus": str(os.cpu_count())}
    for name, dist in [("numpy", "numpy"), ("onnxruntime", "onnxruntime"),
                       ("opencv", "opencv-python-headless"), ("torch", "torch"),
                       ("onnx", "onnx"), ("faiss", "faiss-cpu"),
                       ("tensorrt", "tensorrt"), ("pycuda", "pycuda")]:
        out[name] = _version(dist)
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort
        out["onnxruntime providers"] = ", ".join(ort.get_available_providers())
    out["cuda"] = _cuda()
    out.update(_core())
    return out
