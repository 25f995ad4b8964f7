"""What every `careg-edge` verb shares: the global options (`Settings`, read with
`settings()`), the one place an Inspector is built from them (`make_inspector`),
and the name checks that suggest the closest valid choice. The group in cli.py
and the config loader in config.py both use it, and neither imports the other's
internals; command modules import it lazily inside their functions.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Optional

import click


DEVICES = ["auto", "cpu", "cuda"]
# runtime.select.BACKENDS (not imported: the CLI starts without numpy)
BACKENDS = ["auto", "torch", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"]


def did_you_mean(word: str, options) -> str:
    """' (did you mean 'x'?)' or '' — appended to error messages about names."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SuggestChoice(click.Choice):
    """click.Choice whose error names the closest valid choice."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices))}"
                      f"{did_you_mean(value, self.choices)}", param, ctx)


def device_type(value: str) -> str:
    """--device value check: auto, cpu, cuda or cuda:N."""
    if value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N"
                             f"{did_you_mean(value, DEVICES)}")


@dataclass
class Settings:
    """Global options every verb may read."""

    verbose: bool = False
    quiet: bool = False
    device: str = "auto"
    backend: str = "auto"
    threads: int = 0
    config: Optional[str] = None

    def info(self, msg: str) -> None:
        """Human progress/info line on stderr (stdout stays for data); silenced by --quiet."""
        if not self.quiet:
            click.echo(msg, err=True)

    def debug(self, msg: str) -> None:
        if self.verbose:
            click.echo(f"[debug] {msg}", err=True)


def settings() -> Settings:
    """The global Settings of the running command (defaults outside the CLI)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx else None
    return obj if isinstance(obj, Settings) else Settings()


def make_inspector(model=None, backend=None):
    """The one place the CLI builds an Inspector from the global options: the runtime
    is chosen here (runtime/select.py) so the choice and its reason reach stderr.
    backend None or "auto" = the global --backend."""
    from .pipeline import Inspector

    runtime = open_encoder(model, backend)
    return Inspector(model=runtime, threads=settings().threads)


def open_encoder(model=None, backend=None):
    """The encoder Runtime for --device/--backend/--threads, after one line saying
    which runtime on which device and why (silenced by --quiet)."""
    from .runtime import choose, open_choice, resolve_default

    s = settings()
    backend = s.backend if backend in (None, "auto") else backend
    choice = choose(resolve_default(model), backend, s.device)
    s.info(choice.line())
    s.debug(f"open_choice({choice}, threads={s.threads})")
    return open_choice(choice, s.threads)
