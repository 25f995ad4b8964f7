"""The `careg-edge` command line. Each verb lives in careg_edge/commands/<verb>.py
as a click command named `command`, is short, and calls one library function.
Command modules must not import torch at import time (help stays fast).

Global options (--verbose/--quiet, --device, --backend, --threads, --config) are
parsed here into a `Settings` object (careg_edge/cli_context.py) that verbs
read with `settings()`; a TOML config supplies defaults for any option of any
verb (see careg_edge/config.py).
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from .cli_context import BACKENDS, Settings, SuggestChoice, device_type, did_you_mean
from .errors import CaregError
from .version import __version__

# verb -> module in careg_edge.commands; a module that does not exist yet is skipped.
VERBS = ["train", "export", "build-engine", "enroll", "calibrate", "run", "serve", "eval", "bench", "info", "demo"]


def _with_suggestions(cmd: click.Command) -> click.Command:
    # Applied to every verb (ours and other engineers'), so every Choice suggests
    # and every help page ends with its example (moved from the docstring if needed).
    for p in cmd.params:
        if type(p.type) is click.Choice:
            p.type = SuggestChoice(p.type.choices, case_sensitive=p.type.case_sensitive)
    if not cmd.epilog and cmd.help and "Example" in cmd.help:
        head, _, tail = cmd.help.partition("Example")
        cmd.help, cmd.epilog = head.rstrip(), "\b\nExample" + tail.rstrip()
    return cmd


class UserError(click.ClickException):
    """A CaregError on its way out: printed as one line, exit code from the error."""

    def __init__(self, err: CaregError):
        super().__init__(str(err))
        self.exit_code = getattr(err, "exit_code", 2)

    def show(self, file=None):
        click.echo(f"careg-edge: error: {self.format_message()}", err=True)


class _Group(click.Group):
    """Loads each verb's module on demand so `careg-edge --help` stays cheap."""

    def list_commands(self, ctx):
        return [v for v in VERBS if self._module(v) is not None]

    def get_command(self, ctx, name):
        mod = self._module(name)
        cmd = getattr(mod, "command", None) if mod else None
        return _with_suggestions(cmd) if cmd is not None else None

    def invoke(self, ctx):
        # CaregError -> one-line usage-style error, also under click's test runner.
        try:
            return super().invoke(ctx)
        except CaregError as e:
            if os.environ.get("CAREG_VERBOSE"):
                raise
            raise UserError(e) from None

    def resolve_command(self, ctx, args):
        name = click.utils.make_str(args[0]) if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            ctx.fail(f"no such command {name!r}{did_you_mean(name, self.list_commands(ctx))}. "
                     f"Commands: {', '.join(self.list_commands(ctx))}")
        return super().resolve_command(ctx, args)

    @staticmethod
    def _module(verb):
        if verb not in VERBS:
            return None
        try:
            return importlib.import_module(f"careg_edge.commands.{verb.replace('-', '_')}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("careg_edge.commands."):
                return None
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Example: careg-edge --config line3.toml run --camera 0")
@click.version_option(__version__, prog_name="careg-edge")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and debug output.")
@click.option("--quiet", "-q", is_flag=True, help="Only errors and data (JSON lines) are printed.")
@click.option("--device", default="auto", show_default=True, callback=lambda c, p, v: device_type(v),
              help="Where the encoder runs: auto, cpu, cuda or cuda:N.")
@click.option("--backend", type=SuggestChoice(BACKENDS), default="auto", show_default=True,
              help="Encoder runtime; auto takes the fastest this machine can run the model "
                   "with (TensorRT engine > ONNX Runtime TensorRT/CUDA > torch CUDA > CPU) and "
                   "says which and why.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="CPU threads for the encoder and the scoring core (0 = all cores).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML file whose keys mirror the options: top-level keys are global "
                   "options, a [run] / [enroll] / ... table holds that verb's options. "
                   "Command-line options win.")
@click.pass_context
def cli(ctx, verbose, quiet, device, backend, threads, config_path):
    """careg-edge: few-shot defect detection and localisation (CAReg).

    Enroll a product from a few good images, then inspect a camera, video,
    stream or image folder; one JSON line per frame.
    """
    s = Settings(verbose=verbose, quiet=quiet and not verbose, device=device,
                 backend=backend, threads=threads, config=config_path)
    if config_path:
        from .config import apply_config
        apply_config(ctx, s, config_path)
    ctx.obj = s
    if s.verbose:
        os.environ["CAREG_VERBOSE"] = "1"


def main(argv=None):
    try:
        rv = cli.main(args=argv, prog_name="careg-edge", standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
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
        sys.exit(getattr(e, "exit_code", 2))


if __name__ == "__main__":
    main()
