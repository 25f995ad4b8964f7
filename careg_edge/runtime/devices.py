"""What this machine offers for the encoder: `--device` parsing and the probes
(CUDA devices, ONNX Runtime's GPU execution providers, TensorRT, torch CUDA).

Every probe answers without raising and without importing torch unless the
question is about torch: the ONNX Runtime path must stay torch-free, so the
CUDA device count comes from the driver library itself (libcuda, via ctypes).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Optional

from ..errors import UserInputError

ORT_TENSORRT = "TensorrtExecutionProvider"
ORT_CUDA = "CUDAExecutionProvider"
ORT_CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Device:
    """kind: "auto" | "cpu" | "cuda"; index: the CUDA ordinal (None = not given)."""

    kind: str
    index: Optional[int] = None

    @property
    def ordinal(self) -> int:
        return self.index or 0

    def __str__(self) -> str:
        if self.kind == "cuda":
            return f"cuda:{self.ordinal}"
        return self.kind


def parse_device(text) -> Device:
    """"auto", "cpu", "cuda", "cuda:N" -> Device; anything else is one line naming the forms."""
    text = "auto" if text is None else str(text).strip().lower()
    if text in ("auto", "cpu"):
        return Device(text)
    if text == "cuda":
        return Device("cuda")
    if text.startswith("cuda:") and text[5:].isdigit():
        return Device("cuda", int(text[5:]))
    raise UserInputError(f"--device {text!r}: use auto, cpu, cuda or cuda:N")


def check_index(device: Device, count: int, what: str) -> None:
    """Refuse cuda:N beyond the `count` devices `what` sees (count 0 = none at all)."""
    if device.kind != "cuda":
        return
    if count <= 0:
        raise UserInputError(f"--device {device}: {what} sees no CUDA GPU; use --device cpu")
    if device.ordinal >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
        raise UserInputError(f"--device {device}: this machine has {count} CUDA "
                             f"device{'s' if count > 1 else ''} ({have})")


# ---- probes ---------------------------------------------------------------------------

def cuda_device_count() -> int:
    """CUDA devices the driver sees (0 without a driver); asks libcuda, not torch."""
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    except (OSError, AttributeError):
        return 0


def ort_providers() -> List[str]:
    """ONNX Runtime's execution providers ([] when onnxruntime is absent)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime
    return list(onnxruntime.get_available_providers())


def tensorrt_libs_present() -> bool:
    """TensorRT's libraries, which ONNX Runtime's TensorRT EP loads at session start.
    onnxruntime-gpu lists that EP whether or not they are installed."""
    return (importlib.util.find_spec("tensorrt") is not None
            or ctypes.util.find_library("nvinfer") is not None)


def ort_gpu_providers() -> List[str]:
    """The GPU execution providers ONNX Runtime can start here, best first."""
    have = ort_providers()
    out = []
    if ORT_TENSORRT in have and tensorrt_libs_present():
        out.append(ORT_TENSORRT)
    if ORT_CUDA in have:
        out.append(ORT_CUDA)
    return out


def tensorrt_version() -> Optional[str]:
    """TensorRT's version when `import tensorrt` works, else None."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
        return str(tensorrt.__version__)
    except Exception:   # a broken install (missing libnvinfer) raises on import
        return None


def torch_cuda_count() -> int:
    """torch's CUDA devices (0 when torch is absent or a CPU build). Imports torch."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def torch_cuda_names() -> List[str]:
    if torch_cuda_count() == 0:
        return []
    import torch
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def nvcc_version() -> Optional[str]:
    """`nvcc --version`'s release line, or None when nvcc is not on PATH."""
    path = shutil.which("nvcc")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{path} (did not answer)"
    release = [ln.strip() for ln in out.splitlines() if "release" in ln]
    return f"{path} ({release[-1] if release else 'version unknown'})"
