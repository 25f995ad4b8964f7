"""TOML config files whose keys mirror the command-line options.

    # line3.toml
    backend = "onnxruntime"        # global options at the top level
    threads = 2

    [run]                          # one table per verb, keys = that verb's options
    profile = ["line3.careg"]
    camera = 0
    jsonl = "line3.jsonl"

`careg-edge --config line3.toml run` then behaves as if those options were typed;
options on the command line win. Keys may use dashes or underscores. Relative
paths in path options are taken relative to the config file, so a config can be
moved together with its profiles. Unknown keys are errors with a suggestion.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import click

from .cli_context import BACKENDS, device_type, did_you_mean
from .errors import UserInputError

GLOBAL_KEYS = ("verbose", "quiet", "device", "backend", "threads")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.9/3.10 fallback
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None


def load_toml(path: str) -> Dict[str, Any]:
    if tomllib is None:
        raise UserInputError(f"--config {path}: reading TOML needs Python 3.11+ or `pip install tomli`")
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserInputError(f"--config {p}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise UserInputError(f"--config {p}: not valid TOML ({e})") from None


def _norm(key: str) -> str:
    return key.replace("-", "_")


def _unknown(path, where, key, known) -> UserInputError:
    return UserInputError(f"--config {path}: unknown key {key!r} in {where}"
                          f"{did_you_mean(_norm(key), known)}; known: {', '.join(sorted(known))}")


def verb_defaults(path: str, cmd: click.Command, table: Dict[str, Any]) -> Dict[str, Any]:
    """Map one [verb] table onto the command's parameter names (click default_map)."""
    params = {p.name: p for p in cmd.params if p.name and not getattr(p, "hidden", False)}
    base = Path(path).resolve().parent
    out = {}
    for key, value in table.items():
        name = _norm(key)
        if name not in params:
            raise _unknown(path, f"[{cmd.name}]", key, params)
        out[name] = _resolve_paths(params[name], value, base)
    return out


# String options that name files/folders/globs although their click type is text.
PATH_LIKE = {"support", "images", "video", "jsonl", "model", "profile", "profiles", "output",
             "out", "data", "save_defects", "calib"}


def _resolve_paths(param: click.Parameter, value, base: Path):
    # Camera indices and URLs stay as written; file/folder/glob options move.
    if not (isinstance(param.type, click.Path) or param.name in PATH_LIKE):
        return value
    if isinstance(value, list):
        return [_rel(v, base) for v in value]
    return _rel(value, base)


def _rel(v, base: Path):
    # "imagenet:resnet18", URLs and "-" (stdout) are not paths
    if not isinstance(v, str) or v == "-" or ":" in v or Path(v).is_absolute():
        return v
    return str(base / v)


def apply_config(ctx: click.Context, settings, path: str) -> None:
    """Fill global Settings and ctx.default_map (per verb) from the config file."""
    data = load_toml(path)
    group = ctx.command
    verbs = group.list_commands(ctx)
    default_map = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in verbs:
                raise _unknown(path, "the top level (verb tables)", key, verbs)
            default_map[key] = verb_defaults(path, group.get_command(ctx, key), value)
            continue
        name = _norm(key)
        if name not in GLOBAL_KEYS:
            raise _unknown(path, "the top level", key, list(GLOBAL_KEYS) + verbs)
        if ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT:
            setattr(settings, name, _check_global(path, name, value))
    if settings.verbose:
        settings.quiet = False
    ctx.default_map = default_map


def _check_global(path, name, value):
    if name in ("verbose", "quiet"):
        if not isinstance(value, bool):
            raise UserInputError(f"--config {path}: {name} must be true or false")
        return value
    if name == "threads":
        if not isinstance(value, int) or value < 0:
            raise UserInputError(f"--config {path}: threads must be an integer >= 0")
        return value
    if name == "backend" and value not in BACKENDS:
        raise UserInputError(f"--config {path}: backend {value!r} is not one of "
                             f"{', '.join(BACKENDS)}{did_you_mean(value, BACKENDS)}")
    if name == "device":
        try:
            return device_type(str(value))
        except click.BadParameter as e:
            raise UserInputError(f"--config {path}: device {e.message}") from None
    return value
