"""`careg-edge info`: what is installed, and which settings a run would use."""
import json

import click

EPILOG = """\b
Examples:
  careg-edge info
  careg-edge --config line3.toml info --json
"""


@click.command("info", epilog=EPILOG)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def command(as_json):
    """Show what is installed (runtimes, GPU, core build flags, threads) and the
    global settings in effect (after --config)."""
    from ..cli_context import settings
    from ..info import collect

    s = settings()
    info = collect()
    info.update({"setting device": s.device, "setting backend": s.backend,
                 "setting threads": str(s.threads or "all cores"), "config": s.config or "(none)"})
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    for k, v in info.items():
        click.echo(f"{k:>26}: {v}")
