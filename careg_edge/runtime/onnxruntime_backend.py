"""ONNX Runtime backend: the embedded default (CPU EP), CUDA EP when that build is installed.

NumPy only: this module and everything it imports must never import torch.
The encoder's EncoderMeta travels inside the ONNX file (metadata_props key
META_KEY, written by careg_edge.export.onnx), so an .onnx is self-describing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

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


def cuda_available() -> bool:
    return "CUDAExecutionProvider" in _ort().get_available_providers()


class OnnxRuntime(Runtime):
    """`load` = constructor, `infer` per batch, `info` for humans."""

    def __init__(self, path, device: str = "cpu", threads: int = 0):
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise UserInputError(f"{self.path}: ONNX file not found")
        if device not in ("cpu", "cuda"):
            raise UserInputError(f"device {device!r}: use 'cpu' or 'cuda'")
        if device == "cuda" and not cuda_available():
            raise MissingDependency("ONNX Runtime CUDA EP is not installed: "
                                    "pip install onnxruntime-gpu, or use device='cpu'")
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
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for bad files
            raise UserInputError(f"{self.path}: ONNX Runtime cannot load it "
                                 f"({str(e).splitlines()[0][:200]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = meta_from_metadata(props, str(self.path))
        self.device, self.threads = device, int(threads)
        self.name = f"onnxruntime-{device}"
        self._check_io()

    def _check_io(self) -> None:
        names = [o.name for o in self.session.get_outputs()]
        ins = [i.name for i in self.session.get_inputs()]
        if ins != [INPUT_NAME] or sorted(names) != sorted(OUTPUT_NAMES):
            raise WrongKind(f"{self.path}: inputs {ins} / outputs {names} are not a careg-edge "
                            f"encoder's ({INPUT_NAME} -> {', '.join(OUTPUT_NAMES)}); export it again")

    def infer(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        batch = check_batch(batch, self.meta)
        outs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return dict(zip(OUTPUT_NAMES, outs))

    def info(self) -> Dict[str, str]:
        d = super().info()
        d.update(file=str(self.path), providers=", ".join(self.session.get_providers()),
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


def providers_available() -> List[str]:
    return list(_ort().get_available_providers())

