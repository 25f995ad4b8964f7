"""Encoder runtimes behind one interface; `load_runtime` picks one.

`model` may be:
  None                      the bundled default encoder (careg_edge/models/)
  "imagenet:<backbone>"     ImageNet backbone + identity STNs (needs torch; the
                            paper's "without CAReg" baseline)
  path/to/x.ckpt            a careg-edge training checkpoint (needs torch)
  path/to/x.onnx            an exported encoder (ONNX Runtime)
  path/to/x.engine          a TensorRT engine with its .engine.json sidecar
"""
from .base import OUTPUT_NAMES, EncoderMeta, Runtime  # noqa: F401
