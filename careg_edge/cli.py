"""The `careg-edge` command line. Each verb lives in careg_edge/commands/<verb>.py
as a click command named `command`, is short, and calls one library function.
Command modules must not import torch at import time (help stays fast)."""
from __future__ import annotations

import importlib
import os
import sys

import click

from . import __version__
from .errors import CaregError

# verb -> module in careg_edge.commands; a module that does not exist yet is skipped.
VERBS = ["train", "export", "build-engine", "enroll", "run", "eval", "bench", "info", "demo"]


class _Group(click.Group):
    """Loads each verb's module on demand so `careg-edge --help` stays cheap."""

    def list_commands(self, ctx):
        return [v for v in VERBS if self._module(v) is not None]

    def get_command(self, ctx, name):
        mod = self._module(name)
        return getattr(mod, "command", None) if mod else None

    @staticmethod
    def _module(verb):
        try:
            return importlib.import_module(f"careg_edge.commands.{verb.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("careg_edge.commands."):
                return None
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="careg-edge")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and debug output.")
@click.pass_context
def cli(ctx, verbose):
    """careg-edge: few-shot defect detection and localisation (CAReg)."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    if verbose:
        os.environ["CAREG_VERBOSE"] = "1"


def main(argv=None):
    try:
        return cli.main(args=argv, prog_name="careg-edge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("careg-edge: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except CaregError as e:  # user mistakes: one line, non-zero exit
        if os.environ.get("CAREG_VERBOSE"):
            raise
        click.echo(f"careg-edge: error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
