"""The `edgeml` command line: a thin layer over the Python API."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

import edgeml
from edgeml.errors import EdgemlError, first_line


class _Group(click.Group):
    """Turns errors into one line: user errors exit 2, anything else exits 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except EdgemlError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {first_line(e)} "
                       "(rerun with --debug for the traceback, and please report it)", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(edgeml.__version__, prog_name="edgeml")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Compress, compile, measure and bundle trained models for deployment targets."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("model", required=False)
@click.option("--example", type=click.Choice(["digits"]), help="Use a built-in example instead of MODEL.")
@click.option("--target", default="cpu", show_default=True, help="Deployment target (see `edgeml targets`).")
@click.option("--weights", type=click.Path(), help="state_dict for a package.module:factory MODEL.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="[NAME:]DIMS[:DTYPE]",
              help="Input shape, e.g. input:1x3x224x224; repeat per input.")
@click.option("--data", type=click.Path(), help="One dataset, split into calibration and evaluation (see --split).")
@click.option("--split", type=float, help="Calibration share of --data (default 0.3).")
@click.option("--calib-data", type=click.Path(), help="Calibration data: .npz or image folder.")
@click.option("--eval-data", type=click.Path(), help="Evaluation data: .npz or image folder.")
@click.option("--preprocess", metavar="SPEC",
              help="Image preprocessing: size=HxW,mean=a/b/c,std=a/b/c,scale=F,layout=NCHW,color=rgb.")
@click.option("--max-accuracy-drop", type=float, default=0.01, show_default=True,
              help="Largest accepted quality drop as a fraction (0.01 = 1 point).")
@click.option("--threads", type=int, help="Inference threads  [default: all logical cores]")
@click.option("--measure-seconds", type=float, default=1.0, show_default=True,
              help="Minimum timed seconds per candidate (stops early at 20,000 runs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data splits and random inputs.")
@click.option("-o", "--out", type=click.Path(), help="Output folder  [default: edgeml-out/NAME-TARGET]")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.pass_context
def optimize(ctx, model, example, target, weights, input_shapes, data, split, calib_data, eval_data,
             preprocess, max_accuracy_drop, threads, measure_seconds, seed, out, force):
    """Compress and compile MODEL for a target, measure every candidate, bundle the best.

    MODEL is an ONNX file, a .pt2 ExportedProgram, a TorchScript file, or package.module:factory
    with --weights.
    """
    from edgeml.profiling import MeasureConfig
    from edgeml.progress import Reporter

    if measure_seconds <= 0:
        raise EdgemlError(f"--measure-seconds must be positive, got {measure_seconds}")
    console = Console(stderr=True, soft_wrap=True)
    run = edgeml.optimize(
        model, target=target, example=example, weights=weights, input_shapes=input_shapes,
        data=data, split=split, calib_data=calib_data, eval_data=eval_data, preprocess=preprocess,
        max_accuracy_drop=max_accuracy_drop, threads=threads, out=out, force=force, seed=seed,
        measure=MeasureConfig(seconds=measure_seconds), reporter=Reporter(console),
        debug=ctx.obj["debug"])
    click.echo((Path(run.output) / "report.md").read_text())
    click.echo(f"Wrote {run.output}/ (bundle/, report.json, report.md)")


@cli.command()
def targets():
    """List targets, their candidates, and whether each can run here."""
    from edgeml.targets import TARGETS

    console = Console()
    for target in TARGETS.values():
        table = Table("candidate", "backend", "precision", "status here",
                      title=f"{target.name}: {target.description}", title_justify="left")
        for c in target.candidates:
            missing = c.missing()
            status = (f"[red]not installed[/red]: {', '.join(missing)} (pip install '{c.backend.extra}')"
                      if missing else f"[green]usable[/green] ({c.backend.name} {c.backend.version()})")
            table.add_row(c.name, c.backend.name, c.precision, status)
        console.print(table)


def main() -> None:
    cli(prog_name="edgeml")
