"""What the commands share: error handling and exit codes, the consoles, the options several commands take, and
recipe settings from flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console

from edgeml.compress.quantize import CALIBRATION_METHODS
from edgeml.errors import FULL_DISK, EdgemlError, first_line
from edgeml.inputs.models import safe_loading
from edgeml.measure.evaluate import METRICS
from edgeml.pipeline.recipe import PRECISIONS, QUANTIZERS


class Group(click.Group):
    """Turns errors into one line: user errors and a full disk exit 2, anything else exits 1."""

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
            full = _full_disk(e)
            if full is not None:
                click.echo(f"error: cannot write {full.filename2 or full.filename or 'the output'}: "
                           f"{os.strerror(full.errno)} (the disk is full, or a file size limit is set)", err=True)
                sys.exit(2)
            click.echo(f"internal error: {type(e).__name__}: {first_line(e)} "
                       "(rerun with --debug for the traceback, and please report it)", err=True)
            sys.exit(1)


def _full_disk(e: BaseException | None) -> OSError | None:
    """The OSError that `e` is, or was raised from, when a disk, a quota or a file size limit is full."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in FULL_DISK:
            return e
        e = e.__cause__ or e.__context__
    return None


def progress_console() -> Console:
    """Where a run's progress goes: stderr, so that stdout holds only the result."""
    return Console(stderr=True, soft_wrap=True)


def reporter():
    """The progress reporter of a run, on `progress_console()`."""
    from edgeml.progress import Reporter

    return Reporter(progress_console())


def table_console() -> Console:
    """Tables fit the terminal; piped into a file or another program they keep whole lines."""
    return Console(width=None if sys.stdout.isatty() else 200)


def _options(*decorators):
    """Apply a group of click options in the order they are listed."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def _safe(ctx, param, safe: bool) -> None:
    """--safe holds for the whole command."""
    ctx.with_resource(safe_loading(safe))


threads_option = click.option("--threads", type=int, help="Inference threads  [default: all logical cores]")
force_option = click.option("--force", is_flag=True, help="Replace OUT if it exists.")
precision_option = click.option("--precision", type=click.Choice(PRECISIONS),
                                 help="Candidates to build  [default: auto = all]")
max_accuracy_drop_option = click.option(
    "--max-accuracy-drop", type=float,
    help="Largest accepted quality drop as a fraction (0.01 = 1 point)  [default: 0.01]")
max_ppl_increase_option = click.option(
    "--max-ppl-increase", type=float,
    help="Language models: largest accepted relative perplexity increase (0.05 = 5 %)  [default: 0.05]")
ignore_layer_option = click.option("--ignore-layer", multiple=True, metavar="NAME",
                                   help="Module left unpruned; repeat per module.")
image_preprocess_option = click.option("--preprocess", metavar="SPEC",
                                       help="Image preprocessing for image folders (see optimize).")

model_options = _options(
    click.argument("model", required=False),
    click.option("--example", type=click.Choice(["digits"]), help="Use a built-in example instead of MODEL."),
    click.option("--weights", type=click.Path(), help="state_dict for a package.module:factory MODEL."),
    click.option("--input-shape", "input_shapes", multiple=True, metavar="[NAME:]DIMS[:DTYPE]",
                 help="Input shape, e.g. input:1x3x224x224; repeat per input."),
    click.option("--safe", is_flag=True, expose_value=False, callback=_safe,
                 help="Refuse TorchScript and .pt2 files, which are programs (they can run code); take "
                      "package.module:factory with --weights instead."),
)
data_options = _options(
    click.option("--data", type=click.Path(), help="One dataset, split into calibration and evaluation (see --split)."),
    click.option("--split", type=float, help="Calibration share of --data  [default: 0.3]"),
    click.option("--calib-data", type=click.Path(), help="Calibration data: .npz or image folder."),
    click.option("--eval-data", type=click.Path(), help="Evaluation data: .npz or image folder."),
    click.option("--preprocess", metavar="SPEC",
                 help="Image preprocessing: size=HxW,mean=a/b/c,std=a/b/c,scale=F,layout=NCHW,color=rgb."),
)
quantize_options = _options(
    click.option("--quantizer", type=click.Choice(QUANTIZERS),
                 help="Which tool quantizes  [default: auto = each candidate's own (ort, openvino, litert); "
                      "inc only when named]"),
    click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS),
                 help="INT8 calibration (onnxruntime)  [default: minmax]"),
    max_accuracy_drop_option,
    click.option("--metric", type=click.Choice(METRICS),
                 help="Quality measure of the budget: accuracy (labels), agreement (top-1 with the original), "
                      "cosine (embeddings, any output), r2 (scores, probabilities: few values per sample)  "
                      "[default: auto]"),
    click.option("--tuning-budget", metavar="DURATION",
                 help="Time bound of the accuracy-budget search and of each candidate's build: 90s, 10m, 1h  "
                      "[default: 5m]"),
)


def run_options(out: str):
    """Timing, output and cache options; `out` is the default output folder under edgeml-out/."""
    return _options(
        threads_option,
        click.option("--measure-seconds", type=float, help="Minimum timed seconds per candidate  [default: 1.0]"),
        click.option("--seed", type=int, help="Seed for splits, random inputs and training  [default: 0]"),
        click.option("-o", "--out", type=click.Path(), help=f"Output folder  [default: edgeml-out/{out}]"),
        force_option,
        click.option("--cache-dir", type=click.Path(), help="Cache of exported models and builds  [default: "
                     "$EDGEML_CACHE_DIR, else $XDG_CACHE_HOME/edgeml, else ~/.cache/edgeml]"),
        click.option("--cache/--no-cache", default=True, help="Restore the export and builds from the cache, and "
                                                              "add them to it  [default: on]"),
    )


RECIPE_FLAGS = ("target", "profile", "precision", "quantizer", "calibration_method", "metric", "max_accuracy_drop",
                "max_ppl_increase", "tuning_budget", "distill", "seed", "threads", "measure_seconds")


def recipe_settings(base, flags: dict) -> dict:
    """Recipe settings from the flags actually given (None: not given, so the recipe's value stays)."""
    from dataclasses import replace

    from edgeml.compress.prune import StructuredConfig
    from edgeml.pipeline.recipe import parse_duration

    settings = {k: v for k, v in flags.items() if v is not None and k in RECIPE_FLAGS}
    if "tuning_budget" in settings:
        settings["tuning_budget"] = parse_duration(settings["tuning_budget"])
    prune_flags = {"ratio": flags.get("prune"), "importance": flags.get("prune_importance"),
                   "round_to": flags.get("round_to"), "ignore": tuple(flags.get("ignore_layer") or ()) or None}
    prune_flags = {k: v for k, v in prune_flags.items() if v is not None}
    if prune_flags:
        if base.prune is None and "ratio" not in prune_flags:
            raise EdgemlError("--prune-importance, --round-to and --ignore-layer refine --prune RATIO; give it too")
        settings["prune"] = replace(base.prune or StructuredConfig(), **prune_flags)
    if flags.get("distill_epochs") is not None:
        settings["distill_config"] = replace(base.distill_config, epochs=flags["distill_epochs"])
    return settings


def default_out(model, example, suffix: str) -> Path:
    """edgeml-out/NAME-SUFFIX, NAME the example's or the model file's (or factory's)."""
    name = example or Path(str(model)).stem.split(":")[-1]
    return Path("edgeml-out") / f"{name}-{suffix}"


def echo_run(run) -> None:
    """An optimize run's report.md, then what it wrote."""
    click.echo((Path(run.output) / "report.md").read_text())
    click.echo(f"Wrote {run.output}/ (bundle/, recipe.yaml, report.json, report.md)")


def echo_single_pass(record: dict) -> None:
    """A `prune` or `distill` run's report, then what it wrote."""
    from edgeml.pipeline import single_pass

    click.echo(single_pass.render(record))
    click.echo(f"Wrote {record['output']}/ (model.pt2, report.json, report.md)")
