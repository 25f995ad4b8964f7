"""`careg-edge bench`: runs a bench script of a source checkout. With the global
--device cpu/auto: bench/bench_e2e.py (speed vs the alternatives on this machine);
with --device cuda[:N]: bench/bench_gpu.py (the encoder on that GPU, the scoring
road on the GPU beside the C++ core). Options after `--` go to the script unchanged."""
from pathlib import Path

import click

from ..errors import UserInputError

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"   # in a source checkout only


@click.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
               epilog="\b\nExamples:\n  careg-edge bench --data ../shared/data/mpdd/metal_plate --n 20 "
                      "--backends torch,onnxruntime --baselines regad,anomalib\n"
                      "  careg-edge --device cuda:0 bench --batches 1,32")
@click.pass_context
def command(ctx):
    """End-to-end images/s and latency percentiles of enroll and inspect, per stage,
    backend and backbone, beside a RegAD-style PyTorch pipeline and anomalib 2.x;
    on --device cuda[:N], images/s with the GPU road beside the C++ core."""
    import runpy
    import sys

    from ..cli_context import settings
    from ..runtime.devices import parse_device
    device = parse_device(settings().device)
    name = "bench_gpu.py" if device.kind == "cuda" else "bench_e2e.py"
    script = BENCH_DIR / name
    if not script.is_file():
        raise UserInputError(f"{script}: not found; `careg-edge bench` needs a source checkout "
                             "(the bench/ folder is not installed with the wheel)")
    extra = ["--device", str(device)] if device.kind == "cuda" else []
    sys.argv = [str(script)] + extra + list(ctx.args)
    runpy.run_path(str(script), run_name="__main__")
