import click


@click.command("info")
def command():
    """Show what is installed (runtimes, GPU, core build flags, threads).

    Example: careg-edge info
    """
    from ..info import collect
    for k, v in collect().items():
        click.echo(f"{k:>24}: {v}")
