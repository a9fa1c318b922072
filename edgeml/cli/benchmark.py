"""`edgeml benchmark`."""

from __future__ import annotations

from pathlib import Path

import click

from edgeml.cli.common import (
    data_options,
    default_out,
    max_accuracy_drop_option,
    model_options,
    precision_option,
    progress_console,
    run_options,
)
from edgeml.errors import EdgemlError
from edgeml.measure.evaluate import METRICS


@click.command()
@model_options
@click.option("--targets", default="cpu,mobile", show_default=True, metavar="T1,T2,...",
              help="Targets to run: cpu, mobile, jetson, gpu.")
@precision_option
@max_accuracy_drop_option
@click.option("--metric", type=click.Choice(METRICS), help="Quality measure of the budget  [default: auto]")
@data_options
@run_options("NAME-benchmark")
@click.pass_context
def benchmark(ctx, model, example, weights, input_shapes, targets, data, split, calib_data, eval_data, preprocess,
              out, force, **flags):
    """Optimize MODEL for several targets and print one table: format, status, size, quality, p50, FPS.

    Each target's run (bundle and report) is kept in OUT/TARGET/; the table is OUT/benchmark.md.
    """
    from edgeml.pipeline.several_targets import benchmark as run_benchmark
    from edgeml.progress import Reporter

    names = [t.strip() for t in targets.split(",") if t.strip()]
    if not names:
        raise EdgemlError("--targets: give at least one target, e.g. cpu,mobile")
    console = progress_console()
    out = Path(out) if out else default_out(model, example, "benchmark")
    run_benchmark(model, targets=names, out=out, force=force, reporter_factory=lambda: Reporter(console),
                  example=example, weights=weights, input_shapes=input_shapes, data=data, split=split,
                  calib_data=calib_data, eval_data=eval_data, preprocess=preprocess, debug=ctx.obj["debug"],
                  **{k: v for k, v in flags.items() if v is not None})
    click.echo((out / "benchmark.md").read_text())
    click.echo(f"Wrote {out}/ (benchmark.md, benchmark.json, one folder per target)")
