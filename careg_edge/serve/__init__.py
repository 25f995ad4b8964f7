"""Serving inspection behind NVIDIA Triton Inference Server (`careg-edge serve`).

Two ways, one request format (docs/serving.md):
  * PyTriton (server.py): Triton runs in-process's sidecar, our Python callable
    scores; used by `careg-edge serve --profiles ...`.
  * A Triton model repository (repo_export.py) for the stock Triton container: the
    encoder as an ONNX Runtime model, decoding and scoring as Python-backend models
    (backend_model.py), an ensemble joining them.

Request: `image` (BYTES [1]: PNG/JPEG/... file bytes) and `product` (BYTES [1]: a
plain name, the profile's file stem). Response: `verdict` (ok | defect | error),
`score`, `threshold`, `reason`, `error` (empty unless verdict is error) and a small
`heatmap` (HEATMAP x HEATMAP float32, the anomaly map in score units).
"""
from __future__ import annotations

MODEL_NAME = "careg"
HEATMAP = 32                       # side of the heatmap output
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # per encoded image; more is refused per request
MAX_PIXELS = 40_000_000            # decoded size limit (decompression bombs)
INPUTS = {"image": "BYTES", "product": "BYTES"}
OUTPUTS = {"verdict": "BYTES", "score": "FP32", "threshold": "FP32", "reason": "BYTES",
           "error": "BYTES", "heatmap": "FP32"}
