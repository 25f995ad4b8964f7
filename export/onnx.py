"""Checkpoint or "imagenet:<backbone>" -> ONNX encoder for ONNX Runtime and TensorRT.

The graph:  image float32 [B, 3, H, W] (dynamic B, fixed H, W)
            -> feat1, feat2, feat3, theta, theta_inv   (runtime/base.py OUTPUT_NAMES)

* Preprocessing stays outside: resize to (H, W) and normalise
  `x = (rgb * scale - mean) / std` (RGB, NCHW) with the values in the metadata;
  careg_edge.preprocess does exactly that. Keeping it outside lets DeepStream/C++
  pipelines fuse it with their own colour conversion.
* Opset 17: GridSample (the STN warps) needs >= 16; 17 is the newest opset that
  TensorRT 8.6 (JetPack 6) and 10.x parse completely and that ONNX Runtime runs
  everywhere, and it adds LayerNormalization for trunks that use it.
* No AffineGrid: the encoder builds the sampling grids from θ explicitly
  (MatMul over a constant base grid), because TensorRT's parser lacks AffineGrid.
* metadata_props: META_KEY = EncoderMeta JSON (the one thing profiles and engines
  are checked against), plus flat `careg_edge.*` keys for readers without JSON.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Optional, Tuple

from ..container import atomic_write_bytes
from ..errors import MissingDependency, UserInputError
from ..encoder_meta import EncoderMeta
from ..runtime.base import OUTPUT_NAMES
from ..runtime.onnxruntime_backend import INPUT_NAME, META_KEY

OPSET = 17
MIN_OPSET = 16   # GridSample
FORBIDDEN_OPS = ("AffineGrid",)


def parse_imgsz(value) -> Optional[Tuple[int, int]]:
    """None | 224 | "224" | "256x192" | (256, 192) -> (H, W), multiples of 16."""
    if value is None:
        return None
    try:
        if isinstance(value, (tuple, list)):
            h, w = (int(v) for v in value)
        else:
            parts = str(value).lower().split("x")
            h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if h < 32 or w < 32 or h % 16 or w % 16:
        raise UserInputError(f"--imgsz {value!r}: give N or HxW, each a multiple of 16 and >= 32 "
                             "(the encoder's stages have stride 16)")
    return h, w


def load_encoder(model, imgsz=None):
    """Eval-mode CARegEncoder from a checkpoint path, "imagenet:<backbone>" or a module."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingDependency("export needs torch: pip install 'careg-edge[train]'") from None
    size = parse_imgsz(imgsz)
    if not isinstance(model, str):
        encoder = model
    elif model.startswith("imagenet:"):
        from ..encoder.careg import imagenet_encoder  # submodule: robust to a stale editable install
        encoder = imagenet_encoder(model.split(":", 1)[1], input_size=size or (224, 224))
    else:
        if not Path(model).is_file():
            raise UserInputError(f"{model}: checkpoint not found (or pass 'imagenet:<backbone>')")
        from ..encoder.checkpoint import load
        encoder = load(model).encoder
    if size is not None and tuple(encoder.input_size) != size:
        # the STN's localisation FC is sized for the training resolution
        raise UserInputError(f"--imgsz {imgsz}: {model} was trained at "
                             f"{encoder.input_size[0]}x{encoder.input_size[1]}; its STNs only "
                             "take that size (omit --imgsz)")
    return encoder.eval()


def to_onnx_bytes(encoder, input_size, opset: int = OPSET) -> bytes:
    import torch
    h, w = input_size
    dummy = torch.zeros(2, 3, h, w)   # batch 2 so no size-1 dimension is baked in
    axes = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}}
    buf = io.BytesIO()
    with torch.no_grad():
        # dynamo=False: the TorchScript exporter emits plain opset-17 ops for
        # grid_sample and keeps our output names; the dynamo path adds nothing here.
        torch.onnx.export(encoder, (dummy,), buf, input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def attach_metadata(model, meta: EncoderMeta, opset: int) -> None:
    from ..version import __version__
    props = {
        META_KEY: json.dumps(meta.to_dict(), sort_keys=True),
        "careg_edge.version": __version__,
        "careg_edge.encoder_hash": meta.encoder_hash,
        "careg_edge.backbone": meta.backbone,
        "careg_edge.input_size": f"{meta.input_size[0]}x{meta.input_size[1]}",
        "careg_edge.normalisation": (f"x = (rgb * {meta.scale!r} - mean) / std, RGB, NCHW, "
                                     "resize outside the graph"),
        "careg_edge.mean": json.dumps(list(meta.mean)), "careg_edge.std": json.dumps(list(meta.std)),
        "careg_edge.stn_mode": meta.stn_mode, "careg_edge.opset": str(opset),
        "careg_edge.precision": "fp32",
    }
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name, model.doc_string = "careg-edge", "CAReg encoder; see metadata_props"


def check_graph(model, opset: int) -> None:
    """What TensorRT's parser needs: no AffineGrid, only the declared default-domain opset."""
    import onnx
    ops = {n.op_type for n in model.graph.node}
    bad = sorted(ops & set(FORBIDDEN_OPS))
    if bad:
        raise RuntimeError(f"exported graph contains {bad}; the encoder must build grids explicitly")
    domains = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    if domains != {"ai.onnx": opset}:
        raise RuntimeError(f"exported graph imports opsets {domains}, expected only ai.onnx {opset}")
    onnx.checker.check_model(model, full_check=True)


def simplify(model):
    try:
        import onnxslim
    except ImportError:
        raise MissingDependency("--simplify needs onnxslim: pip install onnxslim") from None
    return onnxslim.slim(model)


def export_onnx(model: str, output, imgsz=None, opset: int = OPSET, simplify_graph: bool = False,
                verbose: bool = True) -> Path:
    """Write the ONNX encoder to `output`; returns its path. `model`: checkpoint path,
    "imagenet:<backbone>" or a CARegEncoder module (tests, notebooks)."""
    import onnx
    t0 = time.perf_counter()
    if opset < MIN_OPSET:
        raise UserInputError(f"--opset {opset}: GridSample needs opset >= {MIN_OPSET} (use {OPSET})")
    encoder = load_encoder(model, imgsz)
    meta = encoder.meta(extra={"exported_from": _source_name(model)})
    size = tuple(meta.input_size)
    graph = onnx.load_from_string(to_onnx_bytes(encoder, size, opset))
    if simplify_graph:
        graph = simplify(graph)
    attach_metadata(graph, meta, opset)
    check_graph(graph, opset)
    output = Path(output)
    atomic_write_bytes(output, graph.SerializeToString())
    if verbose:
        print(f"careg-edge: wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {meta.backbone} "
              f"{size[0]}x{size[1]}, dynamic batch, opset {opset}) in {time.perf_counter() - t0:.1f} s; "
              f"next: careg-edge enroll --support GOOD_DIR --model {output} -o part.careg")
    return output


def _source_name(model) -> str:
    return Path(model).name if isinstance(model, (str, Path)) else type(model).__name__


def run(model: str, imgsz=None, opset: int = OPSET, simplify: bool = False,
        output: Optional[Path] = None) -> Path:
    """`careg-edge export --format onnx`."""
    if str(model).endswith(".onnx"):
        raise UserInputError(f"{model}: already ONNX; export takes a checkpoint or "
                             "'imagenet:<backbone>'")
    return export_onnx(model, output, imgsz=imgsz, opset=opset, simplify_graph=simplify)
