"""The `edgeml` command line: a thin layer over the Python API, one module per command (common.py: what they
share). `main` is the console script."""

from __future__ import annotations

import click

import edgeml
from edgeml.cli import (
    benchmark,
    build_engine,
    distill,
    doctor,
    monitor,
    optimize,
    pack,
    profile,
    profiles,
    prune,
    quantize,
    report,
    rollout,
    serve,
    ship,
    sweep,
    targets,
    verify,
)
from edgeml.cli.common import Group


@click.group(cls=Group)
@click.version_option(edgeml.__version__, prog_name="edgeml")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Compress, compile, measure and bundle trained models for deployment targets."""
    ctx.obj = {"debug": debug}


for command in (optimize.optimize, benchmark.benchmark, sweep.sweep, quantize.quantize, prune.prune, distill.distill,
                targets.targets, doctor.doctor, profiles.profiles, build_engine.build_engine, report.report,
                ship.ship, profile.profile_command, rollout.rollout, pack.pack, verify.verify, serve.serve_command,
                monitor.monitor):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="edgeml")
