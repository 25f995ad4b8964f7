"""The `careg-edge` command line. Each verb is short and calls one function."""
from __future__ import annotations

import sys

import click

from . import __version__
from .errors import CaregError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="careg-edge")
def cli():
    """careg-edge: few-shot defect detection and localisation (CAReg)."""


@cli.command()
def info():
    """Show what is installed (runtimes, GPU, core build flags, threads).

    Example: careg-edge info
    """
    from .info import collect
    for k, v in collect().items():
        click.echo(f"{k:>24}: {v}")


def main(argv=None):
    try:
        return cli.main(args=argv, prog_name="careg-edge", standalone_mode=True)
    except CaregError as e:  # user mistakes: one line, non-zero exit
        click.echo(f"careg-edge: error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
