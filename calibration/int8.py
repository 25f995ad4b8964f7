"""INT8 on the CPU: static QDQ quantisation of the exported encoder with ONNX
Runtime's quantisation tools, calibrated on good images only (no defect image is
needed or wanted: activation ranges must describe what the line normally sees).

The same good-image batches feed the TensorRT entropy calibrator
(calibration/tensorrt_calibrator.py). The accuracy cost is measured, not assumed:
`feature_agreement` compares every output with the FP32 model.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

from ..errors import UserInputError
from ..encoder_meta import EncoderMeta
from ..runtime.onnxruntime_backend import INPUT_NAME, META_KEY, read_meta

# The trunk is quantised (convolutions with the activations, residual adds and
# pools around them, so ORT keeps tensors in int8 between convs: measured on
# ResNet-50 v2 128 px, both more accurate (feat3 cosine 0.987 vs 0.957) and ~12 %
# faster than convs alone). The STN subgraph (localisation net, FC head, grid MatMul,
# GridSample, θ algebra) stays FP32: quantising it moved θ by up to 0.3 and dropped
# feature cosine to ~0.5 (measured).
QUANTIZED_OPS = ("Conv", "Relu", "Clip", "Add", "MaxPool")
FP32_SUBGRAPHS = ("/stn",)   # node-name prefixes the torch exporter gives STN modules


# ---- good-image calibration reader ----------------------------------------------

def calibration_images(folder, meta: EncoderMeta, num_images: int = 64) -> np.ndarray:
    """Up to `num_images` good images of `folder` as float32 [N, 3, H, W], resized and
    normalised by careg_edge.preprocess exactly as at inference. Unreadable files are
    skipped (calibration needs ranges, not every file); none readable is an error."""
    from ..imageio import list_images, read_image
    from ..preprocess import normalise, resize
    files = list_images(folder, what="calibration folder (good images)")
    if num_images and len(files) > num_images:   # spread the picks over the folder
        files = [files[i] for i in np.linspace(0, len(files) - 1, num_images).astype(int)]
    out: List[np.ndarray] = []
    for f in files:
        try:
            out.append(resize(read_image(f), tuple(meta.input_size)))
        except UserInputError:
            continue
    if not out:
        raise UserInputError(f"{folder}: calibration folder has no readable images "
                             f"({len(files)} files tried); point --calib at good images")
    return normalise(out, meta)


def calibration_batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over preprocessed good images."""

    def __init__(self, images: np.ndarray, batch_size: int = 8):
        self._it = calibration_batches(images, batch_size)

    def get_next(self):
        b = next(self._it, None)
        return None if b is None else {INPUT_NAME: b}


# ---- quantisation ------------------------------------------------------------------

def quantize(fp32_onnx, calib, output, num_calib: int = 64, method: str = "minmax") -> Path:
    """Write a static QDQ INT8 copy of `fp32_onnx`, carrying the same careg-edge metadata."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    meta = read_meta(fp32_onnx)   # refuses a foreign ONNX before any work
    images = calibration_images(calib, meta, num_calib)
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise UserInputError(f"calibration method {method!r}: choose one of {', '.join(methods)}")
    import onnx
    names = [n.name for n in onnx.load(str(fp32_onnx), load_external_data=False).graph.node]
    keep_fp32 = [n for n in names if n.startswith(FP32_SUBGRAPHS)]
    with tempfile.TemporaryDirectory(prefix="careg-int8-") as tmp:
        tmp_out = Path(tmp) / "int8.onnx"
        # U8 activations / S8 weights (ORT's AVX2 path). reduce_range = 7-bit weights:
        # without it the int16 pair sums of AVX2's u8*s8 multiply saturate; measured on
        # MobileNetV2 feat3: mean cosine 0.84 with it, 0.55 without (S8S8 the same).
        quantize_static(str(fp32_onnx), str(tmp_out), _Reader(images),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=True,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=keep_fp32,
                        calibrate_method=methods[method],
                        extra_options={"CalibTensorRangeSymmetric": False})
        _write_with_meta(tmp_out, output, meta, num_images=len(images), method=method)
    return Path(output)


def _write_with_meta(src: Path, output, meta: EncoderMeta, **calib_info) -> None:
    import onnx
    from ..container import atomic_write_bytes
    model = onnx.load(str(src))
    extra = dict(meta.extra, precision="int8-qdq",
                 calibration=json.dumps(calib_info, sort_keys=True))
    d = meta.to_dict()
    d["extra"] = extra
    props = {p.key: p.value for p in model.metadata_props}
    props[META_KEY] = json.dumps(d, sort_keys=True)
    props["careg_edge.precision"] = "int8-qdq"
    del model.metadata_props[:]
    for k, v in sorted(props.items()):
        model.metadata_props.add(key=k, value=v)
    atomic_write_bytes(output, model.SerializeToString())


def feature_agreement(fp32: Dict[str, np.ndarray], other: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Per feature map: mean and min cosine of the channel vectors at each position;
    for θ: max abs difference. The cost of INT8, stated in the method's own terms."""
    out: Dict[str, float] = {}
    for name in ("feat1", "feat2", "feat3"):
        a = fp32[name].astype(np.float64)
        b = other[name].astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        out[f"{name}_cos_mean"], out[f"{name}_cos_min"] = float(cos.mean()), float(cos.min())
    for name in ("theta", "theta_inv"):
        out[f"{name}_max_abs"] = float(np.abs(fp32[name] - other[name]).max())
    return out


# ---- `careg-edge export --format onnx-int8` ------------------------------------------

def run(model: str, imgsz=None, opset: int = 17, calib=None, num_calib: int = 64,
        output: Optional[Path] = None) -> Path:
    t0 = time.perf_counter()
    src = Path(model)
    if model.endswith(".onnx"):
        if imgsz is not None:
            raise UserInputError(f"--imgsz: {model} is already exported at a fixed size; "
                                 "export the checkpoint again with --imgsz instead")
        fp32 = src
    else:   # checkpoint / imagenet:<backbone>: FP32 ONNX first, kept beside the INT8 file
        from ..export.onnx import export_onnx
        fp32 = Path(str(output).replace(".int8.onnx", ".onnx"))
        export_onnx(model, fp32, imgsz=imgsz, opset=opset, verbose=False)
    quantize(fp32, calib, output, num_calib)
    size = Path(output).stat().st_size / 1e6
    print(f"careg-edge: wrote {output} ({size:.1f} MB, INT8 QDQ, calibrated on {calib}) in "
          f"{time.perf_counter() - t0:.1f} s; "
          f"next: careg-edge enroll --support GOOD_DIR --model {output} -o part.careg")
    return Path(output)
