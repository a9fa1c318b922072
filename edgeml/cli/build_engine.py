"""`edgeml build-engine`."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("build-engine")
@click.argument("bundle", type=click.Path())
@click.option("-o", "--out", type=click.Path(), help="Engine file  [default: BUNDLE/model.engine]")
def build_engine(bundle, out):
    """Build the TensorRT engine of a jetson/gpu BUNDLE on this device, check it against the bundle's
    reference outputs and time it. Needs TensorRT's Python package (JetPack has it); exits 1 when
    the engine's outputs are outside the tolerance."""
    from edgeml.deploy.build_engine import build_engine as build

    result = build(Path(bundle), out=out and Path(out))
    latency = result["latency_ms"]
    click.echo(f"engine: {result['engine']} (TensorRT {result['tensorrt']['installed']}, bundle made for "
               f"{result['tensorrt']['expected']}; {result['device']})")
    click.echo(f"reference check: max error {result['max_error']:.3g} of the output range, tolerance "
               f"{result['tolerance']:g}: {'passed' if result['passed'] else 'FAILED'}")
    click.echo(f"latency measured here, batch 1: p50 {latency['p50_ms']:.3f} ms (95% CI "
               f"{latency['p50_ci95_ms'][0]:.3f}-{latency['p50_ci95_ms'][1]:.3f}), p90 {latency['p90_ms']:.3f} ms")
    if not result["passed"]:
        sys.exit(1)
