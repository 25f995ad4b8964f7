"""ONNX Runtime backend: the embedded default (CPU EP); the CUDA and TensorRT EPs
on a GPU when onnxruntime-gpu is installed.

NumPy only: this module and everything it imports must never import torch.
The encoder's EncoderMeta travels inside the ONNX file (metadata_props key
META_KEY, written by careg_edge.export.onnx), so an .onnx is self-describing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..errors import MissingDependency, UserInputError, WrongKind
from ..encoder_meta import EncoderMeta
from .base import OUTPUT_NAMES, Runtime

META_KEY = "careg_edge.encoder_meta"   # JSON of EncoderMeta
INPUT_NAME = "image"                   # float32 [B, 3, H, W], normalised


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependency("onnxruntime is not installed: pip install onnxruntime") from None
    return onnxruntime


def meta_from_metadata(props: Dict[str, str], where: str) -> EncoderMeta:
    """EncoderMeta from an ONNX file's metadata_props; refuse files we did not write."""
    if META_KEY not in props:
        raise WrongKind(f"{where}: ONNX file has no careg-edge metadata ({META_KEY}); "
                        "export it with `careg-edge export`")
    try:
        return EncoderMeta.from_dict(json.loads(props[META_KEY]))
    except (ValueError, TypeError):
        raise WrongKind(f"{where}: careg-edge metadata is not valid EncoderMeta JSON; "
                        "export the encoder again") from None


CUDA_EP, TENSORRT_EP, CPU_EP = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"
# The TensorRT EP builds one engine for this batch range (min, opt, max); a larger
# batch is split, so the engine is never rebuilt at run time.
TRT_EP_BATCH = (1, 8, 32)


def trt_ep_cache_dir() -> Path:
    """Where ONNX Runtime's TensorRT EP keeps its engines (a build takes minutes):
    $CAREG_CACHE_DIR, else $XDG_CACHE_HOME/careg-edge, else ~/.cache/careg-edge."""
    root = os.environ.get("CAREG_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "careg-edge")
    return Path(root) / "ort-tensorrt"


def session_providers(provider: Optional[str], device_id: int, input_hw=None) -> list:
    """The `providers` argument of InferenceSession: the GPU EP asked for (with its
    options), the CUDA EP for what TensorRT does not take, the CPU EP last."""
    cuda = (CUDA_EP, {"device_id": int(device_id)})
    if provider is None:
        return [CPU_EP]
    if provider == "cuda":
        return [cuda, CPU_EP]
    if provider != "tensorrt":
        raise UserInputError(f"execution provider {provider!r}: use 'cuda' or 'tensorrt'")
    opts = {"device_id": int(device_id), "trt_fp16_enable": False,  # FP32: the profiles' scores
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_ep_cache_dir()),
            "trt_timing_cache_enable": True}
    if input_hw is not None:
        h, w = input_hw
        for key, b in zip(("min", "opt", "max"), TRT_EP_BATCH):
            opts[f"trt_profile_{key}_shapes"] = f"{INPUT_NAME}:{b}x3x{h}x{w}"
    return [(TENSORRT_EP, opts), cuda, CPU_EP]


def _device_id(device: str) -> int:
    if device == "cpu":
        return 0
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        return int(device[5:] or 0)
    raise UserInputError(f"device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


class OnnxRuntime(Runtime):
    """`load` = constructor, `infer` per batch, `info` for humans.

    device "cpu" runs the CPU EP; "cuda[:N]" runs `provider` ("cuda" = the CUDA EP,
    the default; "tensorrt" = the TensorRT EP, FP32, engines cached) on GPU N."""

    def __init__(self, path, device: str = "cpu", threads: int = 0, provider: Optional[str] = None):
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserInputError(f"{self.path}: ONNX file not found")
        device_id = _device_id(device)
        if device != "cpu":
            provider = provider or "cuda"
            wanted = TENSORRT_EP if provider == "tensorrt" else CUDA_EP
            if wanted not in ort.get_available_providers():
                raise MissingDependency(f"ONNX Runtime has no {wanted} here: pip uninstall "
                                        "onnxruntime && pip install onnxruntime-gpu, or use device='cpu'")
        else:
            provider = None
        opts = ort.SessionOptions()
        # 0 = one thread per core (ORT's own default); a fixed number keeps a line
        # PC with other work responsive.
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        # ORT's workers spin-wait after each run by default: on a 2-core line PC they
        # then steal the cores the scoring core runs on next (measured: the stages
        # after the encoder took 2x as long, bench/bench_e2e.py).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        hw = None
        if provider == "tensorrt":
            hw = read_meta(self.path).input_size
            trt_ep_cache_dir().mkdir(parents=True, exist_ok=True)
        providers = session_providers(provider, device_id, hw)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for bad files
            raise UserInputError(f"{self.path}: ONNX Runtime cannot load it "
                                 f"({str(e).splitlines()[0][:200]})") from None
        self._check_started(providers, device)
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = meta_from_metadata(props, str(self.path))
        self.device, self.threads, self.provider = device, int(threads), provider
        self.name = "onnxruntime-cpu" if provider is None else f"onnxruntime-{provider}"
        self._check_io()

    def _check_started(self, providers: list, device: str) -> None:
        """ORT falls back to the CPU, with a log line only, when a GPU EP cannot start
        (CUDA/cuDNN/TensorRT libraries missing): refuse instead of running slow unnoticed."""
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        active = list(self.session.get_providers())
        if first != CPU_EP and (not active or active[0] != first):
            raise MissingDependency(
                f"{self.path}: ONNX Runtime could not start {first} on {device} (running: "
                f"{', '.join(active)}); its CUDA/cuDNN{'/TensorRT' if first == TENSORRT_EP else ''} "
                "libraries must match the onnxruntime-gpu build, or use --device cpu")

    def _check_io(self) -> None:
        names = [o.name for o in self.session.get_outputs()]
        ins = [i.name for i in self.session.get_inputs()]
        if ins != [INPUT_NAME] or sorted(names) != sorted(OUTPUT_NAMES):
            raise WrongKind(f"{self.path}: inputs {ins} / outputs {names} are not a careg-edge "
                            f"encoder's ({INPUT_NAME} -> {', '.join(OUTPUT_NAMES)}); export it again")

    def infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        batch = check_batch(batch, self.meta)
        top = TRT_EP_BATCH[2]
        if self.provider == "tensorrt" and batch.shape[0] > top:   # stay inside the profile
            parts = [self.infer(batch[i:i + top]) for i in range(0, batch.shape[0], top)]
            return {k: np.concatenate([p[k] for p in parts]) for k in OUTPUT_NAMES}
        outs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return dict(zip(OUTPUT_NAMES, outs))

    def info(self) -> Dict[str, str]:
        d = super().info()
        d.update(file=str(self.path), device=self.device, providers=", ".join(self.session.get_providers()),
                 threads=str(self.threads or os.cpu_count()),
                 precision=self.meta.extra.get("precision", "fp32"))
        return d


def check_batch(batch, meta: EncoderMeta) -> np.ndarray:
    """float32 C-contiguous [B, 3, H, W] at the encoder's input size, or a one-line error."""
    a = np.asarray(batch)
    h, w = meta.input_size
    if a.ndim != 4 or a.shape[1] != 3 or tuple(a.shape[2:]) != (h, w) or a.shape[0] < 1:
        raise UserInputError(f"encoder input: expected float32 [B, 3, {h}, {w}] "
                             f"(resize with careg_edge.preprocess first), got {tuple(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.float32)


def read_meta(path) -> EncoderMeta:
    """EncoderMeta of an .onnx without building a full session (uses the onnx package if present)."""
    try:
        import onnx
    except ImportError:
        return OnnxRuntime(path).meta
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise UserInputError(f"{path}: not a readable ONNX file ({e.__class__.__name__})") from None
    return meta_from_metadata({p.key: p.value for p in model.metadata_props}, str(path))

