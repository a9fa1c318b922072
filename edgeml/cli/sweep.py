"""`edgeml sweep`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeml.cli.common import progress_console


@click.command()
@click.argument("sweep_file", metavar="SWEEP.yaml", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: one folder per cell under OUT/cells, the journal, sweep.md/.html/.json.")
@click.option("--address", metavar="ADDR", help="Join a Ray cluster: auto (the one this machine belongs to), "
              "HOST:PORT (its head node) or ray://HOST:PORT (through Ray Client)  [default: start Ray here]")
@click.option("--max-parallel", type=int, metavar="N",
              help="Run at most N cells at once  [default: one per CPU of the cluster]")
@click.option("--resume", is_flag=True, help="Continue the sweep in OUT: run only the cells not journaled there.")
@click.option("--track", type=click.Choice(["mlflow"]), help="Log each cell to MLflow, as child runs of the sweep.")
def sweep(sweep_file, out, address, max_parallel, resume, track):
    """Run every cell of SWEEP.yaml (models x targets x recipes, each an `optimize` run) on Ray."""
    from edgeml.sweep.schedule import sweep as run_sweep

    record = run_sweep(sweep_file, out, address=address, max_parallel=max_parallel, resume=resume, track=track,
                       console=progress_console())
    click.echo((out / "sweep.md").read_text())
    click.echo(f"Wrote {out}/ (sweep.md, sweep.html, sweep.json, cells/, journal/)")
    failed = [c["cell"] for c in record["cells"] if c["status"] != "done"]
    if failed:
        click.echo(f"error: {len(failed)} of {len(record['cells'])} cells failed ({', '.join(failed[:3])}"
                   f"{', ...' if len(failed) > 3 else ''}): see sweep.md", err=True)
        sys.exit(1)
