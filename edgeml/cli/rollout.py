"""`edgeml rollout` (and `--rollback`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeml.errors import EdgemlError


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--fleet", "fleet_file", type=click.Path(path_type=Path), required=True,
              help="The fleet file: devices (name, `to` as for ship, ssh settings) and thresholds.")
@click.option("--canary", type=int, default=1, show_default=True, metavar="N",
              help="The first N devices of the fleet take the bundle first; the rest only when they all pass.")
@click.option("--max-latency-ratio", type=float, metavar="RATIO",
              help="A canary fails when it is slower than RATIO times the release the device runs (or, where none, "
                   "the build report's p50, or a language model's decode rate in its manifest) beyond doubt  "
                   "[default: the fleet file's, else 1.5]")
@click.option("--rollback", is_flag=True, help="Instead: point every device's current back at its previous release.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Folder of the log, rollout.jsonl (appended)  [default: edgeml-rollout beside the fleet file]")
def rollout(bundle, fleet_file, canary, max_latency_ratio, rollback, out):
    """Roll BUNDLE out to the devices of a fleet: into DEST/releases/<id> on each, canaries first, each
    checked there (files' sha256 and run.py --check; a language model's run.py --verify) and the canaries timed in
    alternating rounds against the release they run (else the build report's p50; a language model's decode time
    per token, else the manifest's decode rate). Only when the canaries pass is DEST/current
    switched, on them and then on each other device.
    Exit 0 when every device runs BUNDLE (with --rollback: when devices went back and all run one release),
    1 when a step failed (or a rollback moved nothing or left mixed releases), 2 for bad input."""
    from dataclasses import replace

    from edgeml.deploy.fleet import RATIO_ABOVE_1, FleetError, load_fleet
    from edgeml.deploy.rollout import rollback as run_rollback
    from edgeml.deploy.rollout import rollout as run_rollout

    if rollback == (bundle is not None):
        raise EdgemlError("give a BUNDLE to roll out, or --rollback without one")
    if max_latency_ratio is not None and not max_latency_ratio > 1:
        raise EdgemlError(f"--max-latency-ratio {max_latency_ratio:g}: {RATIO_ABOVE_1}")
    try:
        fleet = load_fleet(fleet_file)
    except FleetError as e:
        for problem in e.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    if max_latency_ratio is not None:
        fleet = replace(fleet, thresholds=replace(fleet.thresholds, max_latency_ratio=max_latency_ratio))
    if rollback:
        result = run_rollback(fleet, out=out, announce=click.echo)
    else:
        result = run_rollout(bundle, fleet, canaries=canary, out=out, announce=click.echo)
    click.echo(result.line if result.passed else f"FAILED: {result.line}")
    click.echo(f"log: {result.log}")
    if not result.passed:
        sys.exit(1)
