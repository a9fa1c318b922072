"""`edgeml monitor`."""

from __future__ import annotations

import click

from edgeml.cli.common import table_console


@click.command()
@click.argument("url")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Print once and exit.")
@click.option("--token", envvar="EDGEML_SERVE_TOKEN", help="The server's bearer token (or set EDGEML_SERVE_TOKEN).")
def monitor(url, interval, once, token):
    """Watch a running `edgeml serve` at URL (e.g. http://127.0.0.1:8000): requests, errors, p50 latency and
    the drift scores of each input and output, from its /metrics and /health. Ctrl-C stops it; a server
    that cannot be reached exits 2."""
    import time

    from rich.console import Group
    from rich.live import Live

    from edgeml.serve.monitor import fetch, render

    if once:
        line, table = render(fetch(url, token))
        click.echo(line)
        table_console().print(table)
        return
    try:
        with Live(Group(*render(fetch(url, token))), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(Group(*render(fetch(url, token))), refresh=True)
    except KeyboardInterrupt:
        pass
