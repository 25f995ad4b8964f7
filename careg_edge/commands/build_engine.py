"""`careg-edge build-engine`: exported ONNX -> TensorRT engine + .engine.json sidecar."""
import click


@click.command("build-engine")
@click.argument("onnx", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16",
              show_default=True, help="Engine precision (int8 needs --calib good images).")
@click.option("--batch", default="1,4,16", show_default=True,
              help="Optimisation profile MIN,OPT,MAX batch.")
@click.option("--workspace", default=2048, type=int, show_default=True,
              help="Builder workspace limit in MiB.")
@click.option("--calib", default=None, help="int8: folder of good images for the entropy calibrator.")
@click.option("--num-calib", default=64, type=int, show_default=True,
              help="INT8: good images used for calibration (spread over the folder).")
@click.option("--timing-cache", default=None, help="Timing cache file, read and updated.")
@click.option("-o", "--output", default=None, help="Engine file (default: ONNX name + .engine).")
def command(onnx, precision, batch, workspace, calib, num_calib, timing_cache, output):
    """Build a TensorRT engine for this machine's GPU from an exported ONNX.

    Needs TensorRT + cuda-python and an NVIDIA GPU; without them it says what to
    install (the CPU default is ONNX Runtime, which runs the .onnx directly).

    The global --device cuda:N picks the GPU (default the first); --device cpu is refused.

    Example: careg-edge --device cuda:0 build-engine encoder.onnx --precision fp16 --batch 1,4,16
    """
    from ..cli_context import settings
    from ..runtime.tensorrt_backend import current_device, device_index, import_tensorrt
    index = device_index(settings().device)
    current_device(import_tensorrt(), index)   # the one-line refusal comes before any work
    from ..export.tensorrt import build_engine
    build_engine(onnx, output, precision, batch, workspace, calib, num_calib, timing_cache,
                 device=f"cuda:{index}")
