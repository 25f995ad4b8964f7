"""The one table of export formats: it drives `careg-edge export`'s argument checks,
its help text and which function writes each format.

Adding a format = one row here + one module with a `run(model, **options) -> Path`.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from ..errors import MissingDependency, UserInputError


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str                 # file written next to the model unless --output says otherwise
    module: str                 # careg_edge.* module with run(model, **options)
    requires: Tuple[str, ...]   # importable modules needed (checked before any work)
    options: Tuple[str, ...]    # the export options this format accepts
    install: str                # what to install when `requires` is missing
    help: str


FORMATS: Dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "careg_edge.export.onnx", ("torch", "onnx"),
           ("imgsz", "opset", "simplify", "output"),
           "pip install 'careg-edge[train]'",
           "FP32 ONNX, dynamic batch, opset 17: ONNX Runtime (the CPU default) and TensorRT"),
    Format("onnx-int8", ".int8.onnx", "careg_edge.calibration.int8", ("onnxruntime", "onnx"),
           ("imgsz", "opset", "calib", "num_calib", "output"),
           "pip install 'careg-edge[train]'",
           "static QDQ INT8 ONNX for ONNX Runtime on the CPU, calibrated on --calib good images"),
    Format("engine", ".engine", "careg_edge.export.tensorrt", ("tensorrt",),
           ("imgsz", "opset", "precision", "batch", "workspace", "calib", "num_calib",
            "timing_cache", "output", "device"),
           "pip install 'careg-edge[tensorrt]' on a machine with an NVIDIA GPU (JetPack on Jetson)",
           "TensorRT engine (+ .engine.json sidecar) for this machine's GPU; same as build-engine"),
)}

# Defaults of every option; an option set away from its default for a format that
# does not take it is a user mistake, not something to ignore silently.
DEFAULTS = {"imgsz": None, "opset": 17, "simplify": False, "output": None, "calib": None,
            "num_calib": 64, "precision": "fp16", "batch": "1,4,16", "workspace": 2048,
            "timing_cache": None, "device": "auto"}


def help_text() -> str:
    """One line per format, for `careg-edge export --help`."""
    return "\n".join(f"  {f.name:<10} {f.help}" for f in FORMATS.values())


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise UserInputError(f"--format {name!r}: unknown; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def check_options(fmt: Format, options: Dict[str, object]) -> Dict[str, object]:
    """Reject options the format does not take; return only the ones it does."""
    for key, value in options.items():
        if key not in DEFAULTS:
            raise UserInputError(f"export option {key!r} is unknown")
        if key not in fmt.options and value != DEFAULTS[key]:
            takes = [f.name for f in FORMATS.values() if key in f.options]
            raise UserInputError(f"--{key.replace('_', '-')} {value} does not apply to --format {fmt.name} "
                                 f"(only to: {', '.join(takes) or 'none'})")
    if "calib" in fmt.options and fmt.name == "onnx-int8" and not options.get("calib"):
        raise UserInputError("--format onnx-int8 needs --calib FOLDER of good images")
    return {k: options.get(k, DEFAULTS[k]) for k in fmt.options}


def check_installed(fmt: Format) -> None:
    missing = [m for m in fmt.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependency(f"--format {fmt.name} needs {', '.join(missing)}: {fmt.install}"
                                + ("; the CPU default is ONNX Runtime (--format onnx)"
                                   if fmt.name == "engine" else ""))


def default_output(model: str, fmt: Format) -> Path:
    """x.ckpt -> x<suffix>; imagenet:resnet18 -> imagenet_resnet18<suffix> in the cwd."""
    if model.startswith("imagenet:"):
        return Path(model.replace(":", "_") + fmt.suffix)
    p = Path(model)
    stem = p.name[:-len(".onnx")] if p.name.endswith(".onnx") else p.stem
    return p.with_name(stem + fmt.suffix)


def run(model: str, format: str = "onnx", **options) -> Path:
    """Export `model` to `format`; every check happens before any heavy import."""
    fmt = get_format(format)
    opts = check_options(fmt, options)
    check_installed(fmt)
    opts["output"] = Path(opts["output"]) if opts["output"] else default_output(model, fmt)
    return importlib.import_module(fmt.module).run(model, **opts)
