"""`edgeml profile`: a bundle timed on the device."""

from __future__ import annotations

from pathlib import Path

import click

from edgeml.cli.common import threads_option


@click.command("profile")
@click.argument("bundle", type=click.Path(path_type=Path))
@threads_option
@click.option("--measure-seconds", type=float, default=1.0, show_default=True, help="Minimum timed seconds.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("device_report.json"), show_default=True,
              help="The device report (JSON).")
def profile_command(bundle, threads, measure_seconds, out):
    """Time BUNDLE's artifact on this machine (the device) with its own runtime, batch 1, and write a
    device report that `edgeml report RUN_DIR --merge` puts next to the build's numbers."""
    from edgeml.deploy.on_device import profile_bundle, write_device_report

    result = profile_bundle(bundle, threads=threads, measure_seconds=measure_seconds)
    if result.get("kind") == "language-model":
        machine, decode, ttft = result["machine"], result["decode_tokens_per_s"], result["ttft_ms"]
        click.echo(f"{result['bundle']['build']} ({result['runtime']['name']} {result['runtime']['version']}) on "
                   f"{machine['cpu']} ({machine['architecture']}), {result['threads']} thread(s)")
        click.echo(f"input: {result['input']}")
        click.echo(f"decode {decode['median']:.1f} tokens/s (95% CI {decode['ci95'][0]:.1f}-{decode['ci95'][1]:.1f}), "
                   f"time to first token {ttft['median']:.1f} ms (95% CI {ttft['ci95'][0]:.1f}-{ttft['ci95'][1]:.1f})")
        click.echo(f"wrote {write_device_report(result, out)}")
        return
    latency, machine = result["latency"], result["machine"]
    lo, hi = latency["p50_ci95_ms"]
    click.echo(f"{result['bundle']['candidate']} ({result['runtime']['name']} {result['runtime']['version']}) on "
               f"{machine['cpu']} ({machine['architecture']}), {result['threads']} thread(s)")
    click.echo(f"input: {result['input']}")
    click.echo(f"p50 {latency['p50_ms']:.4f} ms (95% CI {lo:.4f}-{hi:.4f}), p90 {latency['p90_ms']:.4f} ms, "
               f"p99 {latency['p99_ms']:.4f} ms, {latency['throughput_per_s']:.0f} inferences/s "
               f"({latency['runs']} runs)")
    click.echo(f"wrote {write_device_report(result, out)}")
