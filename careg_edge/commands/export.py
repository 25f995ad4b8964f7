"""`careg-edge export`: checkpoint -> deployable encoder; formats come from one table."""
import click

from ..export.formats import DEFAULTS, FORMATS, help_text

D = DEFAULTS


@click.command("export", epilog="\b\nFormats:\n" + help_text() + "\n\n\b\nExamples:\n"
               "  careg-edge export runs/careg.ckpt --imgsz 224\n"
               "  careg-edge export imagenet:resnet18 --format onnx-int8 --calib data/good/")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="onnx", show_default=True,
              help="What to write (see Formats below).")
@click.option("--imgsz", default=D["imgsz"], help="Input size N or HxW (default: the model's own).")
@click.option("--opset", default=D["opset"], type=int, show_default=True,
              help="ONNX opset (>= 16 for GridSample; 17 is what TensorRT 8.6+ and ORT both take).")
@click.option("--simplify", is_flag=True, default=D["simplify"], help="Run onnxslim (if installed).")
@click.option("--calib", default=D["calib"], help="Folder of good images for INT8 calibration.")
@click.option("--num-calib", default=D["num_calib"], type=int, show_default=True,
              help="Calibration images used (spread over the folder).")
@click.option("--precision", default=D["precision"], show_default=True, help="engine: fp32|fp16|int8.")
@click.option("--batch", default=D["batch"], show_default=True, help="engine: batch MIN,OPT,MAX.")
@click.option("--workspace", default=D["workspace"], type=int, show_default=True,
              help="engine: builder workspace limit in MiB.")
@click.option("--timing-cache", default=D["timing_cache"], help="engine: timing cache file (reused).")
@click.option("-o", "--output", default=D["output"], help="Output file (default: beside the model).")
def command(model, fmt, **options):
    """Export MODEL (a checkpoint, 'imagenet:<backbone>' or, for onnx-int8/engine, an .onnx).

    Prints what it wrote, its size and time, and the next command to run. The global
    --device picks the GPU an engine is built on (cuda[:N]); ONNX is traced on the CPU.
    """
    from ..cli_context import settings
    from ..export.formats import run
    if fmt == "engine":
        options["device"] = settings().device
    run(model, fmt, **options)
