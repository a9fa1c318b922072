"""`edgeml profiles list` and `edgeml profiles show`."""

from __future__ import annotations

import click
from rich.table import Column, Table

from edgeml.cli.common import table_console


@click.group()
def profiles():
    """Device profiles: what each device computes, and how fast (from its datasheet)."""


@profiles.command("list")
def profiles_list():
    """List the bundled device profiles."""
    from edgeml.profiles import list_profiles

    table = Table("device", "target", "precisions", "peak GOPS (best)", "memory GB", "bandwidth GB/s", "DLA")
    table.columns.insert(0, Column("name", no_wrap=True))
    for p in list_profiles():
        best = max(p.peak_gops, key=p.peak_gops.get)
        table.add_row(p.name, p.display_name, p.target, ", ".join(p.precisions),
                      f"{p.peak_gops[best]:,.0f} ({best})", f"{p.memory_gb:g}", f"{p.memory_bandwidth_gbs:g}",
                      str(p.dla_cores))
    table_console().print(table)


@profiles.command("show")
@click.argument("name")
def profiles_show(name):
    """Show one profile (a bundled NAME or a YAML file) as YAML."""
    import yaml

    from edgeml.profiles import load_profile

    profile = load_profile(name)
    click.echo(f"# {profile.display_name}: {profile.path}")
    click.echo(yaml.safe_dump(profile.to_dict(), sort_keys=False).rstrip())
