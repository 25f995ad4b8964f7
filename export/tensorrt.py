"""ONNX -> TensorRT engine with the TensorRT Python API (no trtexec).

Writes a plain `.engine` (trtexec, DeepStream and C++ load it as is) and a
`.engine.json` sidecar (TensorRT version, GPU, compute capability, ONNX hash,
precision, batch profile, EncoderMeta) that TensorRTRuntime checks at load.

Precision: fp32 | fp16 | int8. INT8 of an FP32 ONNX uses the entropy calibrator
fed by good images (cache reused while the ONNX hash matches); an INT8 QDQ ONNX
(`export --format onnx-int8`) carries its own scales and is built without one
(explicit quantisation, the only INT8 path left in TensorRT >= 11).

Versions: TensorRT 8.6 (JetPack 6) needs the EXPLICIT_BATCH network flag (without
it the ONNX parser builds an implicit-batch network and the dynamic batch profile
is refused); TensorRT 10 is explicit-batch only and the flag is deprecated and
ignored, so 0 is passed. `network_flags` picks by trt.__version__.

Not run on hardware (no machine of this project has TensorRT; docs/gpu.md): the
calls follow the documented 8.6 and 10 Python APIs and are checked against a
recording fake `tensorrt` module (tests/test_tensorrt.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Tuple

from ..container import atomic_write_bytes, sha256_file
from ..errors import CaregError, FormatError, UserInputError
from ..calibration.tensorrt_calibrator import read_cache
from ..runtime.onnxruntime_backend import INPUT_NAME, read_meta
from ..runtime.tensorrt_backend import current_device, device_index, import_tensorrt, write_sidecar

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_BATCH = 8


def parse_batch(spec) -> Tuple[int, int, int]:
    """"1,4,16" -> (min, opt, max); "8" -> (1, 8, 8)."""
    try:
        vals = [int(v) for v in str(spec).split(",")]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = [1, vals[0], vals[0]]
    if len(vals) != 3 or not 1 <= vals[0] <= vals[1] <= vals[2]:
        raise UserInputError(f"--batch {spec!r}: give MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX, "
                             "e.g. 1,4,16")
    return vals[0], vals[1], vals[2]


def trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        raise CaregError(f"TensorRT version {trt.__version__!r} is not MAJOR.MINOR...") from None


def network_flags(trt) -> int:
    """create_network's flags: explicit batch on 8.x, 0 on 10+ (always explicit there)."""
    if trt_major(trt) < 8:
        raise UserInputError(f"TensorRT {trt.__version__}: careg-edge builds with 8.6 or newer")
    if trt_major(trt) < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def _parse(trt, builder, logger, onnx_path: Path):
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise FormatError(f"{onnx_path}: TensorRT's ONNX parser refused it: {errs[:300]}")
    return network, parser


def _is_qdq(trt, network) -> bool:
    return any(network.get_layer(i).type == trt.LayerType.QUANTIZE
               for i in range(network.num_layers))


def _profile(builder, shape_hw, mn: int, opt: int, mx: int):
    h, w = shape_hw
    prof = builder.create_optimization_profile()
    prof.set_shape(INPUT_NAME, (mn, 3, h, w), (opt, 3, h, w), (mx, 3, h, w))
    return prof


def _set_precision(trt, builder, config, network, precision, meta, calib, num_calib,
                   cache_path, onnx_hash):
    """Set the builder flags for `precision`. Returns (calibrator or None, how INT8
    scales were found or None); the caller keeps the calibrator alive until the build ends."""
    if precision == "fp32":
        return None, None
    if not getattr(builder, "platform_has_fast_fp16", True):
        print("careg-edge: warning: this GPU has no fast FP16; the engine may be slow")
    config.set_flag(trt.BuilderFlag.FP16)   # INT8 layers fall back to FP16, not FP32
    if precision == "fp16":
        return None, None
    config.set_flag(trt.BuilderFlag.INT8)
    if _is_qdq(trt, network):
        return None, "qdq: the ONNX's own Q/DQ scales"
    cached = read_cache(cache_path, onnx_hash)
    if calib is None and cached is None:
        raise UserInputError("--precision int8 needs --calib FOLDER of good images "
                             "(or an INT8 QDQ ONNX from `careg-edge export --format onnx-int8`)")
    if not hasattr(config, "int8_calibrator"):
        raise UserInputError(f"TensorRT {trt.__version__} has no implicit INT8 calibration: "
                             "build from `careg-edge export --format onnx-int8` instead")
    from ..calibration.int8 import calibration_batches, calibration_images
    from ..calibration.tensorrt_calibrator import make_entropy_calibrator
    images = None if cached else calibration_images(calib, meta, num_calib)
    batches = calibration_batches(images, CALIB_BATCH) if images is not None else iter(())
    calibrator = make_entropy_calibrator(batches, CALIB_BATCH, (3, *meta.input_size),
                                         cache_path, onnx_hash)
    config.int8_calibrator = calibrator
    config.set_calibration_profile(_profile(builder, meta.input_size, CALIB_BATCH, CALIB_BATCH,
                                            CALIB_BATCH))
    how = (f"entropy calibrator, cached table {cache_path.name}" if cached
           else f"entropy calibrator, {len(images)} good images of {calib}")
    return calibrator, how


def build_engine(onnx_path, output=None, precision: str = "fp16", batch="1,4,16",
                 workspace: int = 2048, calib=None, num_calib: int = 64,
                 timing_cache: Optional[str] = None, verbose: bool = True,
                 device="cuda:0") -> Path:
    """Build `output` (default: beside the ONNX) and its sidecar on GPU `device`
    (cuda[:N]); return the engine path."""
    t0 = time.perf_counter()
    onnx_path = Path(onnx_path)
    if precision not in PRECISIONS:
        raise UserInputError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    mn, opt, mx = parse_batch(batch)
    trt = import_tensorrt()
    gpu = current_device(trt, device_index(device))   # one-line refusal when no GPU answers
    meta = read_meta(onnx_path)    # refuses an ONNX without careg-edge metadata
    onnx_hash = sha256_file(onnx_path)
    output = Path(output) if output else onnx_path.with_suffix(".engine")
    cache_path = output.with_suffix(".calib") if precision == "int8" else None

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace) << 20)
    config.add_optimization_profile(_profile(builder, meta.input_size, mn, opt, mx))
    _calibrator, int8_scales = _set_precision(trt, builder, config, network, precision, meta,
                                              calib, num_calib, cache_path, onnx_hash)
    cache = _load_timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CaregError(f"{onnx_path}: TensorRT could not build an engine (see its log above); "
                         "try a larger --workspace or --precision fp32")
    atomic_write_bytes(output, bytes(serialized))
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    facts = dict(gpu, onnx_sha256=onnx_hash, onnx_file=onnx_path.name, precision=precision,
                 profile={"min": mn, "opt": opt, "max": mx}, workspace_mb=int(workspace),
                 encoder_meta=meta.to_dict())
    if int8_scales:
        facts["int8_scales"] = int8_scales
    write_sidecar(output, facts)
    if verbose:
        print(f"careg-edge: wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {precision}, "
              f"batch {mn}/{opt}/{mx}, {gpu['gpu_name']}) in {time.perf_counter() - t0:.1f} s; "
              f"next: careg-edge enroll --support GOOD_DIR --model {output} -o part.careg")
    return output


def _load_timing_cache(config, path: Optional[str]):
    """Reuse tactic timings across builds (minutes on Jetson); a stale cache is ignored."""
    blob = Path(path).read_bytes() if path and Path(path).is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=True)
    return config.get_timing_cache()


def run(model: str, imgsz=None, opset: int = 17, precision: str = "fp16", batch="1,4,16",
        workspace: int = 2048, calib=None, num_calib: int = 64, timing_cache=None,
        output: Optional[Path] = None, device="auto") -> Path:
    """`careg-edge export --format engine`: ONNX first when given a checkpoint."""
    index = device_index(device)   # --device cpu is refused before any work
    import_tensorrt()
    if model.endswith(".onnx"):
        onnx_path = Path(model)
    else:
        from .onnx import export_onnx
        onnx_path = Path(output).with_suffix(".onnx")
        export_onnx(model, onnx_path, imgsz=imgsz, opset=opset, verbose=False)
    return build_engine(onnx_path, output, precision, batch, workspace, calib, num_calib,
                        timing_cache, device=f"cuda:{index}")

