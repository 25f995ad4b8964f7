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


def _gpu() -> dict:
    """What each runtime could use on a GPU here, and what --device auto would pick."""
    from .runtime import devices
    from .runtime.select import auto_summary

    out = {"cuda driver devices": str(devices.cuda_device_count())}
    if importlib.util.find_spec("torch") is not None:
        names = devices.torch_cuda_names()
        out["torch cuda devices"] = (", ".join(f"cuda:{i} {n}" for i, n in enumerate(names))
                                     or "none (CPU build of torch or no GPU)")
    gpu_eps = devices.ort_gpu_providers()
    out["onnxruntime gpu EPs"] = ", ".join(gpu_eps) or "none (pip install onnxruntime-gpu)"
    trt = devices.tensorrt_version()
    out["tensorrt import"] = f"ok ({trt})" if trt else "no"
    out["nvcc"] = devices.nvcc_version() or "not found"
    for label, pick in auto_summary().items():
        out[f"auto picks for {label}"] = pick
    return out


def collect() -> dict:
    from .version import __version__
    out = {"careg-edge": __version__, "python": platform.python_version(),
           "machine": f"{platform.system()} {platform.machine()}", "cpus": str(os.cpu_count())}
    for name, dist in [("numpy", "numpy"), ("onnxruntime", "onnxruntime"),
                       ("onnxruntime-gpu", "onnxruntime-gpu"),
                       ("opencv", "opencv-python-headless"), ("torch", "torch"),
                       ("onnx", "onnx"), ("faiss", "faiss-cpu"), ("faiss-gpu", "faiss-gpu-cu12"),
                       ("tensorrt", "tensorrt"), ("cuda-python", "cuda-python")]:
        out[name] = _version(dist)
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort
        out["onnxruntime providers"] = ", ".join(ort.get_available_providers())
    out["cuda"] = _cuda()
    out.update(_gpu())
    out.update(_core())
    return out
