"""TensorRT INT8 entropy calibrator fed by good images, with a reusable cache.

The cache TensorRT writes is kept in a careg_edge.container file tagged with the
sha256 of the ONNX it was computed for; it is reused only when that hash matches,
so a re-exported encoder is always recalibrated. The cache helpers are pure
Python (tested here); the calibrator class needs tensorrt + cuda-python and has
NOT been run (no GPU on this project's machines).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..container import read_container, write_container
from ..errors import FormatError

CACHE_KIND = "careg-trt-calibration-cache"
CACHE_VERSION = 1


def read_cache(path, onnx_hash: str) -> Optional[bytes]:
    """The cached TensorRT calibration table, or None if absent/stale/unreadable."""
    if path is None or not Path(path).is_file():
        return None
    try:
        tensors, meta = read_container(path, CACHE_KIND, CACHE_VERSION)
    except FormatError:
        return None   # a damaged cache costs one recalibration, never a failed build
    if meta.get("onnx_sha256") != onnx_hash or "cache" not in tensors:
        return None
    return tensors["cache"].tobytes()


def write_cache(path, onnx_hash: str, cache: bytes) -> None:
    write_container(path, {"cache": np.frombuffer(bytes(cache), np.uint8)},
                    {"onnx_sha256": onnx_hash}, CACHE_KIND, CACHE_VERSION)


def make_entropy_calibrator(batches: Iterable[np.ndarray], batch_size: int, image_shape,
                            cache_path, onnx_hash: str):
    """IInt8EntropyCalibrator2 over float32 [batch_size, 3, H, W] batches of good images."""
    from ..runtime.tensorrt_backend import cuda_call, cudart, import_tensorrt

    trt, rt = import_tensorrt(), cudart()
    nbytes = int(batch_size * np.prod(image_shape)) * 4

    class GoodImageCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)   # pybind11 needs the explicit call
            self._it = iter(batches)
            self._ptr = cuda_call(rt.cudaMalloc(nbytes))
            self.count = 0

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            batch = next(self._it, None)
            if batch is None:
                return None   # tells TensorRT calibration is over
            batch = _pad(np.ascontiguousarray(batch, np.float32), batch_size)
            cuda_call(rt.cudaMemcpy(self._ptr, batch.ctypes.data, batch.nbytes,
                                    rt.cudaMemcpyKind.cudaMemcpyHostToDevice))
            self.count += 1
            return [int(self._ptr)]

        def read_calibration_cache(self):
            return read_cache(cache_path, onnx_hash)

        def write_calibration_cache(self, cache):
            if cache_path is not None:
                write_cache(cache_path, onnx_hash, bytes(cache))

        def __del__(self):
            try:
                rt.cudaFree(self._ptr)
            except Exception:   # interpreter shutdown
                pass

    return GoodImageCalibrator()


def _pad(batch: np.ndarray, size: int) -> np.ndarray:
    """The last batch may be short; repeat its images (the calibrator's shape is fixed)."""
    if batch.shape[0] == size:
        return batch
    idx = np.arange(size) % batch.shape[0]
    return np.ascontiguousarray(batch[idx])
