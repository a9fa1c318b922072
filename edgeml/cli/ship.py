"""`edgeml ship`."""

from __future__ import annotations

from pathlib import Path

import click

from edgeml.errors import EdgemlError


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--to", "to", required=True, metavar="ssh://USER@HOST[:PORT]/PATH | USER@HOST:PATH | DIR",
              help="The folder the bundle goes into (as BUNDLE's own name there); read as rsync reads it: a colon "
                   "before any slash means SSH, ./NAME:X is a local folder.")
@click.option("-i", "--identity", type=click.Path(path_type=Path), help="SSH private key file.")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="Passed to ssh/scp/rsync as -o KEY=VALUE, e.g. Port=2222 for USER@HOST:PATH; repeatable.")
@click.option("--verify-remote", is_flag=True,
              help="Then run the bundle's `run.py --check` there (a language model's: `run.py --verify`).")
def ship(bundle, to, identity, ssh_options, verify_remote):
    """Copy BUNDLE to a device over SSH (rsync when both ends have it, else scp) or to a folder,
    then check every file there against the manifest's sha256. Run it again to resume an
    interrupted copy: files already there intact are not sent again."""
    from edgeml.deploy.ship import ship as run_ship

    options = {}
    for item in ssh_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EdgemlError(f"--ssh-option {item}: use KEY=VALUE, e.g. StrictHostKeyChecking=accept-new")
        options[key.strip()] = value
    result = run_ship(bundle, to, identity=identity, ssh_options=options, verify_remote=verify_remote)
    click.echo(f"shipped {bundle} to {result.destination} ({result.transfer})")
    click.echo(f"sent: {', '.join(result.sent) or 'nothing'}")
    if result.kept:
        click.echo(f"already there, intact: {', '.join(result.kept)}")
    click.echo(f"verified: {result.verified} files match the manifest's sha256")
    if result.remote_check is not None:
        click.echo(f"reference check: {result.remote_check}")
