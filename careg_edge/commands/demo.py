"""`careg-edge demo`: the offline tour on bundled material (what `make demo` runs)."""
from __future__ import annotations

from pathlib import Path

import click

from ..estimators.registry import NAMES as ESTIMATORS

EPILOG = """\b
Examples:
  careg-edge demo
  careg-edge --threads 2 demo --out /tmp/flange-demo --estimator padim
"""


@click.command("demo", epilog=EPILOG)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("careg-demo"),
              show_default=True, help="Folder for the profile, overlays and report.html.")
@click.option("--estimator", type=click.Choice(ESTIMATORS), default="patchcore",
              show_default=True, help="Estimator to enroll with.")
@click.option("--augment", default="auto", show_default=True, metavar="none|auto|LIST",
              help="Support augmentation (see `careg-edge enroll --help`); auto picks the "
                   "views by Wasserstein distance, none is faster.")
@click.option("--model", default=None, metavar="PATH", help="Encoder (default: the bundled one).")
@click.option("--force", is_flag=True, help="Write into --out even if it holds files the demo did not make.")
def command(out, estimator, augment, model, force):
    """Run the bundled demo offline: enroll a synthetic steel flange on 10 good
    images, inspect 16 test images (good, scratch, dent, stain, missing hole),
    write heatmap overlays and an HTML report, and print where it is.

    Needs no network and no data besides what ships in the package.
    """
    from ..cli_context import make_inspector, settings
    from ..demo import run_demo, summary_lines

    s = settings()
    res = run_demo(out, make_inspector(model), estimator=estimator, force=force, log=s.info,
                   augment=augment)
    for line in summary_lines(res):
        click.echo(line)
