"""`careg-edge bench`: runs bench/bench_e2e.py of a source checkout (speed vs the
alternatives on this machine). Options after `--` go to the script unchanged."""
from pathlib import Path

import click

from ..errors import UserInputError


@click.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
               epilog="\b\nExample:\n  careg-edge bench --data ../shared/data/mpdd/metal_plate --n 20 "
                      "--backends torch,onnxruntime --baselines regad,anomalib")
@click.pass_context
def command(ctx):
    """End-to-end images/s and latency percentiles of enroll and inspect, per stage,
    backend and backbone, beside a RegAD-style PyTorch pipeline and anomalib 2.x."""
    import runpy
    import sys
    script = Path(__file__).resolve().parents[2] / "bench" / "bench_e2e.py"
    if not script.is_file():
        raise UserInputError(f"{script}: not found; `careg-edge bench` needs a source checkout "
                             "(the bench/ folder is not installed with the wheel)")
    sys.argv = [str(script)] + list(ctx.args)
    runpy.run_path(str(script), run_name="__main__")
