"""Where inspection runs: the compiled core on the host, or the torch road on the
runtime's device. Torch-free, so the pipeline can ask without importing torch."""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

from ..errors import MissingDependency, UserInputError

ENV = "CAREG_GPU_ROAD"   # auto (unset) | 0 (always the C++ core) | 1 (torch road, any device)
_OFF, _ON, _AUTO = ("0", "false", "no", "off"), ("1", "true", "yes", "on"), ("", "auto")


def runtime_device(runtime) -> str:
    """The device a runtime computes on, as a string ("cpu", "cuda", "cuda:1").

    Every Runtime has one (runtime/base.py, "cpu" unless a GPU runtime sets it); an
    object that only duck-types `infer` (a test's stand-in encoder) has none: "cpu"."""
    dev = getattr(runtime, "device", None)
    return "cpu" if dev is None else str(dev)


def road_device(runtime, gpu_road: Optional[bool] = None) -> Optional[str]:
    """The device of the torch road for this runtime, or None for the compiled core.

    gpu_road None follows $CAREG_GPU_ROAD: unset/auto = the torch road exactly when the
    runtime is on CUDA and torch is installed (ONNX Runtime / TensorRT runtimes on a
    GPU without torch keep the core); 0 = never (debugging on a GPU machine); 1 =
    always, on the runtime's device (CPU torch included: how CI runs the road).
    True/False win over the environment."""
    if gpu_road is None:
        env = os.environ.get(ENV, "").strip().lower()
        if env in _OFF:
            return None
        if env not in _ON + _AUTO:
            raise UserInputError(f"${ENV}={os.environ[ENV]!r}: use 0 (C++ core), 1 (torch road) or auto")
        gpu_road = True if env in _ON else None
    if gpu_road is False:
        return None
    dev = runtime_device(runtime)
    has_torch = importlib.util.find_spec("torch") is not None   # without importing it
    if gpu_road is None and not (dev.startswith("cuda") and has_torch):
        return None
    if not has_torch:
        raise MissingDependency(f"${ENV}=1: the torch road needs torch: pip install 'careg-edge[train]'")
    return dev
