"""`edgeml verify`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from edgeml.cli.common import table_console
from edgeml.errors import EdgemlError


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
def verify(bundle):
    """Check BUNDLE (a bundle folder, or a .tar.gz from `edgeml pack`): the manifest against its schema,
    every file's size and sha256, no file added, and the reference vectors run with the runtime found
    here. Exits 0 when everything matches, 1 when a check fails, 2 when BUNDLE cannot be used."""
    from edgeml.bundle.verify import verify as verify_bundle

    result = verify_bundle(bundle)
    manifest = result.manifest
    backend = manifest.get("backend") if isinstance(manifest.get("backend"), dict) else \
        {"name": manifest.get("runtime", "?")}
    # a manifest that fails its schema may lack any of these: the table then shows that check failing
    name = manifest.get("candidate", manifest.get("build", "?"))
    table = Table("check", "result", "detail",
                  title=f"{bundle}: {name} ({backend.get('name', '?')} "
                  f"{manifest.get('precision', '?')}, target {manifest.get('target', '?')})", title_justify="left")
    for c in result.checks:
        table.add_row(c.name, "ok" if c.passed else "[red]FAILED[/red]", c.detail)
    table_console().print(table)
    if result.checked_with:
        click.echo(result.checked_with)
    if not result.passed:
        click.echo(f"FAILED: {', '.join(result.failed)}")
        sys.exit(1)
    vectors = "answers" if manifest.get("kind") == "language-model" else "vectors"
    if result.not_run:
        raise EdgemlError(f"the files match the manifest, but the reference {vectors} cannot run here: "
                          f"{result.not_run}")
    click.echo(f"verified: the files match the manifest and the outputs match the reference {vectors}")
