"""`edgeml pack`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="The archive, e.g. model.edgeml.tar.gz")
def pack(bundle_dir, out):
    """Pack BUNDLE_DIR (OUT/bundle of `edgeml optimize`) into one .tar.gz, written atomically. The same
    bundle always gives the same bytes (sorted entries, no times, owners or other metadata)."""
    from edgeml.bundle.pack import pack as pack_bundle

    click.echo(str(pack_bundle(bundle_dir, out)))
