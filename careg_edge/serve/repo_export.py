"""`careg-edge serve --export-repo DIR`: a model repository for the stock Triton container.

    DIR/careg_decode/   python: image bytes -> normalised encoder input + image size
    DIR/careg_encoder/  onnxruntime_onnx: the encoder (TensorRT: see its config.pbtxt)
    DIR/careg_score/    python: encoder outputs + product -> verdict, score, threshold, ...
                        profiles/ holds the *.careg files it serves (reloaded on change)
    DIR/careg/          ensemble joining the three: the model clients call

The request and response tensors are those of `careg-edge serve` (serve/__init__.py),
so one client talks to either. The Python models import careg_edge (backend_model.py):
the container needs careg-edge installed (docs/serving.md).
"""
from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from ..container import atomic_write_bytes
from ..errors import UserInputError
from . import HEATMAP, MAX_IMAGE_BYTES, MODEL_NAME

DECODE, ENCODER, SCORE = "careg_decode", "careg_encoder", "careg_score"
ENCODER_OUTPUTS = ("feat1", "feat2", "feat3", "theta", "theta_inv")
MODEL_PY = {DECODE: "DecodeModel", SCORE: "ScoreModel"}

TENSORRT_NOTE = """\
# TensorRT on the GPU: uncomment to let ONNX Runtime run this model through its
# TensorRT execution provider (FP32, engines cached across restarts). Scores then
# differ from the CPU's by float rounding; re-check the thresholds on the line.
# optimization { execution_accelerators { gpu_execution_accelerator: [ {
#   name: "tensorrt"
#   parameters { key: "precision_mode" value: "FP32" }
#   parameters { key: "max_workspace_size_bytes" value: "1073741824" }
#   parameters { key: "trt_engine_cache_enable" value: "1" }
#   parameters { key: "trt_engine_cache_path" value: "/tmp/careg-trt" } } ] } }
"""


def _tensor(kind: str, name: str, dtype: str, dims: Sequence[int]) -> str:
    return f'{kind} {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ] }}'


def _block(kind: str, specs: Iterable[Tuple[str, str, Sequence[int]]]) -> str:
    return ",\n".join("  " + _tensor("", *s).lstrip() for s in specs).join([f"{kind} [\n", "\n]"])


def _batching(max_batch: int, delay_us: int = 2000) -> str:
    return (f"max_batch_size: {max_batch}\n"
            f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n")


def _params(values: Dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
                   for k, v in values.items())


RESPONSE = [("verdict", "TYPE_STRING", [1]), ("score", "TYPE_FP32", [1]),
            ("threshold", "TYPE_FP32", [1]), ("reason", "TYPE_STRING", [1]),
            ("error", "TYPE_STRING", [1]), ("heatmap", "TYPE_FP32", [HEATMAP, HEATMAP])]
REQUEST = [("image", "TYPE_STRING", [1]), ("product", "TYPE_STRING", [1])]


def configs(meta, shapes: Dict[str, Tuple[int, ...]], max_batch: int) -> Dict[str, str]:
    """config.pbtxt text per model. shapes: encoder output -> dims without the batch."""
    h, w = meta.input_size
    enc_in = [("image", "TYPE_FP32", [3, h, w])]
    enc_out = [(n, "TYPE_FP32", list(shapes[n])) for n in ENCODER_OUTPUTS]
    cpu = "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    decode = (f'name: "{DECODE}"\nbackend: "python"\n' + _batching(max_batch)
              + _block("input", [("image", "TYPE_STRING", [1])]) + "\n"
              + _block("output", [("input", "TYPE_FP32", [3, h, w]), ("size", "TYPE_INT32", [2])])
              + "\n" + cpu + _params({"max_image_bytes": str(MAX_IMAGE_BYTES)}))
    encoder = (f'name: "{ENCODER}"\nplatform: "onnxruntime_onnx"\n' + _batching(max_batch)
               + _block("input", enc_in) + "\n" + _block("output", enc_out) + "\n"
               + "# KIND_AUTO: one instance per GPU when there is one, else on the CPU\n"
               + "instance_group [ { count: 1 kind: KIND_AUTO } ]\n" + TENSORRT_NOTE)
    score = (f'name: "{SCORE}"\nbackend: "python"\n' + _batching(max_batch)
             + _block("input", enc_out + [("size", "TYPE_INT32", [2]), ("product", "TYPE_STRING", [1])])
             + "\n" + _block("output", RESPONSE) + "\n" + cpu
             + _params({"profiles_dir": "profiles", "poll_s": "1.0"}))
    steps = [(DECODE, {"image": "image"}, {"input": "encoder_input", "size": "image_size"}),
             (ENCODER, {"image": "encoder_input"}, {n: n for n in ENCODER_OUTPUTS}),
             (SCORE, dict({n: n for n in ENCODER_OUTPUTS}, size="image_size", product="product"),
              {n: n for n, _, _ in RESPONSE})]
    step_text = ",\n".join(
        f'  {{ model_name: "{m}" model_version: -1\n'
        + "".join(f'    input_map {{ key: "{k}" value: "{v}" }}\n' for k, v in ins.items())
        + "".join(f'    output_map {{ key: "{k}" value: "{v}" }}\n' for k, v in outs.items()) + "  }"
        for m, ins, outs in steps)
    ensemble = (f'name: "{MODEL_NAME}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
                + _block("input", REQUEST) + "\n" + _block("output", RESPONSE) + "\n"
                + "ensemble_scheduling { step [\n" + step_text + "\n] }\n")
    return {DECODE: decode, ENCODER: encoder, SCORE: score, MODEL_NAME: ensemble}


def _encoder_file(model) -> Path:
    from ..runtime import resolve_default
    path = Path(resolve_default(model))
    if path.suffix.lower() != ".onnx" or not path.is_file():
        raise UserInputError(f"--model {model}: --export-repo takes an ONNX encoder "
                             f"(make one with `careg-edge export`)")
    return path


def _output_shapes(onnx_path: Path):
    """EncoderMeta and each output's dims (without the batch), by one run on zeros."""
    from ..runtime.onnxruntime_backend import OnnxRuntime
    rt = OnnxRuntime(onnx_path, threads=1)
    out = rt.infer(np.zeros((1, 3) + tuple(rt.meta.input_size), np.float32))
    return rt.meta, {n: tuple(int(d) for d in out[n].shape[1:]) for n in ENCODER_OUTPUTS}


def _target(out: Path) -> Path:
    """Refuse to pour a repository into a folder that holds something else."""
    if out.exists() and any(out.iterdir()) and not (out / MODEL_NAME / "config.pbtxt").exists():
        raise UserInputError(f"--export-repo {out}: folder is not empty and is not a repository "
                             f"this command wrote; choose an empty or new folder")
    return out


def export_repo(out, model=None, profiles: Sequence = (), max_batch: int = 8) -> Path:
    """Write the repository; profiles (files or folders of *.careg) go to careg_score/profiles/."""
    from ..pipeline import check_profile
    from .registry import ProfileRegistry
    out = _target(Path(out))
    onnx_path = _encoder_file(model)
    meta, shapes = _output_shapes(onnx_path)
    reg = ProfileRegistry(profiles, check=partial(check_profile, meta)) if profiles else None
    for name, text in configs(meta, shapes, int(max_batch)).items():
        atomic_write_bytes(out / name / "config.pbtxt", text.encode())
        (out / name / "1").mkdir(parents=True, exist_ok=True)
    for name, cls in MODEL_PY.items():
        atomic_write_bytes(out / name / "1" / "model.py",
                           f"from careg_edge.serve.backend_model import {cls} as TritonPythonModel  "
                           f"# noqa: F401\n".encode())
        atomic_write_bytes(out / name / "encoder_meta.json",
                           json.dumps(meta.to_dict(), indent=1).encode())
    atomic_write_bytes(out / ENCODER / "1" / "model.onnx", onnx_path.read_bytes())
    prof_dir = out / SCORE / "profiles"
    prof_dir.mkdir(parents=True, exist_ok=True)
    if reg is not None:
        for name in reg.names():
            shutil.copyfile(reg._entries[name].path, prof_dir / f"{name}.careg")
    return out
