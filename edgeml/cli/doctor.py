"""`edgeml doctor`."""

from __future__ import annotations

import click

from edgeml.cli.common import table_console


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Tables, or one JSON object for scripts.")
def doctor(fmt):
    """Show what edgeml can use here: the runtime packages installed (or the extra that adds them), this
    machine's CPU features, memory and GPUs, and whether each target's candidates are measured here,
    checked here with their latency predicted, or not served."""
    import json

    from edgeml.doctor import gather, render

    report = gather()
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        render(report, table_console())
