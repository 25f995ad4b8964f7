"""TensorRT backend: a plain `.engine` file plus its `.engine.json` sidecar.

The engine stays plain (trtexec, DeepStream and C++ load it as is); what must
match at load time lives in the sidecar: TensorRT version, GPU name, compute
capability, the ONNX hash it was built from, precision, the batch profile and
the EncoderMeta. A mismatch is refused with one line saying to rebuild.

Device buffers go through cuda-python (NVIDIA's official bindings; wheels for
x86-64 and aarch64/Jetson, no compiler needed, no context of its own that
fights TensorRT's); see docs/export.md.

Not run on hardware (no machine of this project has TensorRT; docs/gpu.md). The
code uses the named-tensor API (set_input_shape, set_tensor_address,
execute_async_v3) that TensorRT 8.5+ and 10 share; the sidecar logic is pure
Python and tested, the calls are tested against a recording fake tensorrt module.

The engine's precision (fp32 | fp16 | int8) goes into its EncoderMeta's extra
"precision", so an Inspector can compare it with the one a profile was enrolled
with (runtime/precision.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..container import atomic_write_bytes, sha256_file
from ..errors import EncoderMismatch, FormatError, MissingDependency, UserInputError, VersionMismatch
from ..encoder_meta import EncoderMeta
from .base import OUTPUT_NAMES, Runtime
from .devices import Device, check_index
from .onnxruntime_backend import INPUT_NAME, check_batch

SIDECAR_KIND = "careg-engine-sidecar"
SIDECAR_VERSION = 1
INSTALL_HINT = ("TensorRT needs an NVIDIA GPU: pip install 'careg-edge[tensorrt]' "
                "(tensorrt + cuda-python; JetPack ships them on Jetson); "
                "the CPU default is ONNX Runtime (use the .onnx)")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency(f"tensorrt is not installed. {INSTALL_HINT}") from None
    return tensorrt


def cudart():
    """cuda-python's runtime API (module path moved in cuda-python 12.8)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise MissingDependency(f"cuda-python is not installed. {INSTALL_HINT}") from None
    return runtime


def cuda_call(result):
    """cuda-python returns (err, *values); raise on error, unwrap the values."""
    err, rest = result[0], result[1:]
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else (rest or None)


def sidecar_path(engine) -> Path:
    return Path(str(engine) + ".json")


def device_index(device) -> int:
    """"cuda" / "cuda:N" / N -> N; "cpu" is refused (engines run on a GPU only)."""
    text = str(device)
    if text.isdigit():
        return int(text)
    if text in ("auto", "cuda"):
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise UserInputError(f"--device {text}: a TensorRT engine is built and run on a GPU; "
                         "use --device cuda[:N] (or the .onnx in ONNX Runtime on the CPU)")


def current_device(trt=None, index: int = 0) -> Dict[str, str]:
    """What GPU `index` would build: TensorRT version, GPU name, compute capability.
    Also makes it the current CUDA device, so the engine is built/run there."""
    trt = trt or import_tensorrt()
    rt = cudart()
    try:
        count = cuda_call(rt.cudaGetDeviceCount())
    except RuntimeError:
        count = 0
    if not count:
        raise MissingDependency(f"no CUDA GPU is visible. {INSTALL_HINT}")
    check_index(Device("cuda", index), count, "the CUDA runtime")
    cuda_call(rt.cudaSetDevice(index))
    props = cuda_call(rt.cudaGetDeviceProperties(index))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt_version": trt.__version__, "gpu_name": name.strip("\x00 "),
            "compute_capability": f"{props.major}.{props.minor}"}


# ---- sidecar (pure Python, tested without TensorRT) -----------------------------

def write_sidecar(engine, facts: Dict[str, object]) -> Path:
    """facts: current_device() + onnx_sha256, onnx_file, precision, profile, encoder_meta."""
    from ..version import __version__
    doc = dict(facts, format=SIDECAR_KIND, format_version=SIDECAR_VERSION,
               careg_edge_version=__version__, engine_sha256=sha256_file(engine))
    path = sidecar_path(engine)
    atomic_write_bytes(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_sidecar(engine) -> dict:
    path = sidecar_path(engine)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: sidecar missing; rebuild with `careg-edge build-engine` "
                          "(it writes the .engine and its .engine.json together)") from None
    except (OSError, ValueError):
        raise FormatError(f"{path}: sidecar is not readable JSON; rebuild the engine") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_KIND:
        raise FormatError(f"{path}: not a careg-edge engine sidecar; rebuild the engine")
    if doc.get("format_version") != SIDECAR_VERSION:
        raise VersionMismatch(f"{path}: sidecar version {doc.get('format_version')}, this "
                              f"careg-edge reads {SIDECAR_VERSION}; rebuild the engine")
    return doc


def check_sidecar(doc: dict, engine, device: Dict[str, str], onnx_hash: Optional[str] = None,
                  engine_hash: Optional[str] = None) -> None:
    """Refuse an engine built elsewhere: each mismatch is one line naming the fix."""
    fix = f"rebuild it on this machine: careg-edge build-engine {doc.get('onnx_file', 'model.onnx')}"
    for key, what in (("tensorrt_version", "TensorRT"), ("gpu_name", "GPU"),
                      ("compute_capability", "compute capability")):
        if str(doc.get(key)) != str(device[key]):
            raise VersionMismatch(f"{engine}: built for {what} {doc.get(key)}, this machine has "
                                  f"{device[key]}; engines do not move between them: {fix}")
    if engine_hash is not None and doc.get("engine_sha256") != engine_hash:
        raise FormatError(f"{engine}: engine file does not match its sidecar "
                          f"(replaced or corrupt): {fix}")
    if onnx_hash is not None and doc.get("onnx_sha256") != onnx_hash:
        raise EncoderMismatch(f"{engine}: built from another version of "
                              f"{doc.get('onnx_file')} (ONNX hash differs): {fix}")


def engine_meta(doc: dict) -> EncoderMeta:
    """The sidecar's EncoderMeta with the engine's own precision in extra["precision"]
    (the ONNX's extra may say fp32 or int8-qdq; what runs is the engine)."""
    d = dict(doc["encoder_meta"])
    d["extra"] = dict(d.get("extra") or {}, precision=str(doc["precision"]))
    return EncoderMeta.from_dict(d)


def onnx_hash_if_present(doc: dict, engine) -> Optional[str]:
    """Hash of the ONNX the engine came from, when it is still beside the engine."""
    name = doc.get("onnx_file")
    if not name:
        return None
    p = Path(engine).parent / Path(name).name
    return sha256_file(p) if p.is_file() else None


# ---- runtime ---------------------------------------------------------------------

class TensorRTRuntime(Runtime):
    name = "tensorrt"

    def __init__(self, engine, device="cuda:0"):
        self.path = Path(engine)
        if not self.path.is_file():
            raise UserInputError(f"{self.path}: engine file not found")
        self.device = f"cuda:{device_index(device)}"
        trt = import_tensorrt()
        doc = read_sidecar(self.path)
        check_sidecar(doc, self.path, current_device(trt, device_index(device)),
                      onnx_hash_if_present(doc, self.path), sha256_file(self.path))
        self.precision, self.max_batch = doc["precision"], int(doc["profile"]["max"])
        self.meta = engine_meta(doc)
        self._trt, self._rt = trt, cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise FormatError(f"{self.path}: TensorRT could not deserialize the engine; rebuild it")
        self.context = self.engine.create_execution_context()
        self.stream = cuda_call(self._rt.cudaStreamCreate())
        self._buffers: Dict[str, tuple] = {}   # name -> (device ptr, capacity bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self._buffers.get(name, (None, 0))
        if nbytes > cap:   # grow only: batch sizes vary within the profile
            if ptr is not None:
                cuda_call(self._rt.cudaFree(ptr))
            ptr = cuda_call(self._rt.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return int(ptr)

    def infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        batch = check_batch(batch, self.meta)
        if batch.shape[0] > self.max_batch:   # the profile caps the batch: split
            parts = [self.infer(batch[i:i + self.max_batch])
                     for i in range(0, batch.shape[0], self.max_batch)]
            return {k: np.concatenate([p[k] for p in parts]) for k in OUTPUT_NAMES}
        return self._run(batch)

    def _run(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        rt, trt, ctx = self._rt, self._trt, self.context
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ctx.set_input_shape(INPUT_NAME, batch.shape)
        ptr = self._device_buffer(INPUT_NAME, batch.nbytes)
        cuda_call(rt.cudaMemcpyAsync(ptr, batch.ctypes.data, batch.nbytes, h2d, self.stream))
        ctx.set_tensor_address(INPUT_NAME, ptr)
        hosts = {}
        for name in OUTPUT_NAMES:
            shape = tuple(ctx.get_tensor_shape(name))
            hosts[name] = np.empty(shape, trt.nptype(self.engine.get_tensor_dtype(name)))
            ctx.set_tensor_address(name, self._device_buffer(name, hosts[name].nbytes))
        if not ctx.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        for name, host in hosts.items():
            cuda_call(rt.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                         d2h, self.stream))
        cuda_call(rt.cudaStreamSynchronize(self.stream))
        return {k: v.astype(np.float32, copy=False) for k, v in hosts.items()}

    def info(self) -> Dict[str, str]:
        d = super().info()
        d.update(file=str(self.path), device=self.device, precision=self.precision,
                 max_batch=str(self.max_batch))
        return d

    def __del__(self):
        for ptr, _ in getattr(self, "_buffers", {}).values():
            try:
                self._rt.cudaFree(ptr)
            except Exception:   # interpreter shutdown: the driver frees it anyway
                pass
