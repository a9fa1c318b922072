"""The `edgeml` command line: a thin layer over the Python API."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Column, Table

import edgeml
from edgeml.compress.prune import IMPORTANCES
from edgeml.compress.quantize import CALIBRATION_METHODS
from edgeml.errors import FULL_DISK, EdgemlError, first_line
from edgeml.inputs.models import safe_loading
from edgeml.measure.evaluate import METRICS
from edgeml.pipeline.recipe import PRECISIONS, QUANTIZERS


class _Group(click.Group):
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


@click.group(cls=_Group)
@click.version_option(edgeml.__version__, prog_name="edgeml")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Compress, compile, measure and bundle trained models for deployment targets."""
    ctx.obj = {"debug": debug}


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
                 help="Which tool quantizes  [default: auto = ort and openvino; inc only when named]"),
    click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS),
                 help="INT8 calibration (onnxruntime)  [default: minmax]"),
    click.option("--max-accuracy-drop", type=float,
                 help="Largest accepted quality drop as a fraction (0.01 = 1 point)  [default: 0.01]"),
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
        click.option("--threads", type=int, help="Inference threads  [default: all logical cores]"),
        click.option("--measure-seconds", type=float, help="Minimum timed seconds per candidate  [default: 1.0]"),
        click.option("--seed", type=int, help="Seed for splits, random inputs and training  [default: 0]"),
        click.option("-o", "--out", type=click.Path(), help=f"Output folder  [default: edgeml-out/{out}]"),
        click.option("--force", is_flag=True, help="Replace OUT if it exists."),
        click.option("--cache-dir", type=click.Path(), help="Cache of exported models and builds  [default: "
                     "$EDGEML_CACHE_DIR, else $XDG_CACHE_HOME/edgeml, else ~/.cache/edgeml]"),
        click.option("--cache/--no-cache", default=True, help="Restore the export and builds from the cache, and "
                                                              "add them to it  [default: on]"),
    )


@cli.command()
@model_options
@click.option("--recipe", type=click.Path(), help="YAML recipe with the settings; flags given here override it.")
@click.option("--target", help="Deployment target: cpu, mobile, jetson, gpu (see `edgeml targets`)  [default: cpu]")
@click.option("--profile", metavar="NAME|FILE",
              help="Device profile (`edgeml profiles list`) or your own YAML  [default: per target]")
@click.option("--precision", type=click.Choice(PRECISIONS), help="Candidates to build  [default: auto = all]")
@quantize_options
@click.option("--prune", type=float, metavar="RATIO", help="Structured pruning: fraction of channels to remove.")
@click.option("--prune-importance", type=click.Choice(IMPORTANCES), help="Channel importance  [default: l1]")
@click.option("--round-to", type=int, help="Keep channel counts a multiple of this  [default: 8]")
@click.option("--ignore-layer", multiple=True, metavar="NAME", help="Module left unpruned; repeat per module.")
@click.option("--distill/--no-distill", default=None,
              help="Distill from the original model  [default: after pruning, when --train-data is given]")
@click.option("--distill-epochs", type=int, help="Most distillation epochs (early stopping)  [default: 30]")
@click.option("--train-data", type=click.Path(), help="Training data for pruning and distillation (labels optional).")
@data_options
@run_options("NAME-TARGET")
@click.option("--track", type=click.Choice(["mlflow"]),
              help="Log the run to MLflow (MLFLOW_TRACKING_URI, else ./mlruns); needs edgeml[track].")
@click.pass_context
def optimize(ctx, model, example, weights, input_shapes, recipe, data, split, calib_data, eval_data, train_data,
             preprocess, out, force, track, **flags):
    """Compress and compile MODEL for a target, measure every candidate, bundle the best.

    MODEL is an ONNX file, a .pt2 ExportedProgram, a TorchScript file, or package.module:factory
    with --weights.
    """
    from edgeml.pipeline.recipe import Recipe, load_recipe, make_recipe
    from edgeml.progress import Reporter

    if track:
        from edgeml.report.tracking import check_tracker

        check_tracker(track)
    base = make_recipe(**load_recipe(recipe)) if recipe else Recipe()
    run = edgeml.optimize(
        model, recipe=base, example=example, weights=weights, input_shapes=input_shapes, data=data, split=split,
        calib_data=calib_data, eval_data=eval_data, train_data=train_data, preprocess=preprocess, out=out,
        force=force, reporter=Reporter(Console(stderr=True, soft_wrap=True)), debug=ctx.obj["debug"],
        track=track, cache=flags["cache"], cache_dir=flags["cache_dir"], **_settings(base, flags))
    click.echo((Path(run.output) / "report.md").read_text())
    click.echo(f"Wrote {run.output}/ (bundle/, recipe.yaml, report.json, report.md)")


@cli.command()
@model_options
@click.option("--targets", default="cpu,mobile", show_default=True, metavar="T1,T2,...",
              help="Targets to run: cpu, mobile, jetson, gpu.")
@click.option("--precision", type=click.Choice(PRECISIONS), help="Candidates to build  [default: auto = all]")
@click.option("--max-accuracy-drop", type=float,
              help="Largest accepted quality drop as a fraction (0.01 = 1 point)  [default: 0.01]")
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
    console = Console(stderr=True, soft_wrap=True)
    out = Path(out) if out else _default_out(model, example, "benchmark")
    run_benchmark(model, targets=names, out=out, force=force, reporter_factory=lambda: Reporter(console),
                  example=example, weights=weights, input_shapes=input_shapes, data=data, split=split,
                  calib_data=calib_data, eval_data=eval_data, preprocess=preprocess, debug=ctx.obj["debug"],
                  **{k: v for k, v in flags.items() if v is not None})
    click.echo((out / "benchmark.md").read_text())
    click.echo(f"Wrote {out}/ (benchmark.md, benchmark.json, one folder per target)")


@cli.command()
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
                       console=Console(stderr=True, soft_wrap=True))
    click.echo((out / "sweep.md").read_text())
    click.echo(f"Wrote {out}/ (sweep.md, sweep.html, sweep.json, cells/, journal/)")
    failed = [c["cell"] for c in record["cells"] if c["status"] != "done"]
    if failed:
        click.echo(f"error: {len(failed)} of {len(record['cells'])} cells failed ({', '.join(failed[:3])}"
                   f"{', ...' if len(failed) > 3 else ''}): see sweep.md", err=True)
        sys.exit(1)


@cli.command()
@model_options
@click.option("--precision", type=click.Choice([p for p in PRECISIONS if p not in ("auto", "fp32")]),
              default="int8", show_default=True, help="Precision to quantize to.")
@click.option("--target", default="cpu", show_default=True, help="Deployment target (see `edgeml targets`).")
@quantize_options
@data_options
@click.option("--train-data", type=click.Path(),
              help="Training data (labels optional): when INT8 breaks the budget, the PyTorch model is also "
                   "fine-tuned with fake INT8 (quantization-aware distillation).")
@run_options("NAME-quantized")
@click.pass_context
def quantize(ctx, model, example, weights, input_shapes, data, split, calib_data, eval_data, train_data, preprocess,
             out, force, **flags):
    """Quantize MODEL (post-training, calibrated), measure it against the original, bundle the best.

    With --max-accuracy-drop, the quantizers (activation ranges, weights) that cost the most accuracy
    are reverted to float until the budget is met; the report ranks them and lists every configuration
    tried.
    With --train-data, quantization-aware distillation is tried too (the `-qat` row).
    """
    from edgeml.pipeline.recipe import Recipe
    from edgeml.progress import Reporter

    run = edgeml.optimize(
        model, example=example, weights=weights, input_shapes=input_shapes, data=data, split=split,
        calib_data=calib_data, eval_data=eval_data, train_data=train_data, preprocess=preprocess, force=force,
        out=out or _default_out(model, example, "quantized"),
        reporter=Reporter(Console(stderr=True, soft_wrap=True)), debug=ctx.obj["debug"],
        cache=flags["cache"], cache_dir=flags["cache_dir"], **_settings(Recipe(), flags))
    click.echo((Path(run.output) / "report.md").read_text())
    click.echo(f"Wrote {run.output}/ (bundle/, recipe.yaml, report.json, report.md)")


@cli.command()
@model_options
@click.option("--method", type=click.Choice(["structured", "unstructured", "2:4"]), default="structured",
              show_default=True, help="Channels (faster everywhere), single weights (smaller), or 2:4 (NVIDIA GPUs).")
@click.option("--ratio", type=float, default=0.5, show_default=True,
              help="Fraction of channels (structured) or weights (unstructured) to remove.")
@click.option("--importance", type=click.Choice(IMPORTANCES), default="l1", show_default=True,
              help="Channel importance (taylor uses gradients on --data).")
@click.option("--global", "global_pruning", is_flag=True, help="Rank channels across layers, not per layer.")
@click.option("--round-to", type=int, default=8, show_default=True, help="Keep channel counts a multiple of this.")
@click.option("--ignore-layer", multiple=True, metavar="NAME", help="Module left unpruned; repeat per module.")
@click.option("--data", type=click.Path(), help="Example inputs (and Taylor's gradients): .npz or image folder.")
@click.option("--eval-data", type=click.Path(), help="Judge quality before and after on this data.")
@click.option("--preprocess", metavar="SPEC", help="Image preprocessing for image folders (see optimize).")
@click.option("-o", "--out", type=click.Path(), help="Output folder  [default: edgeml-out/NAME-pruned]")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def prune(model, example, weights, input_shapes, method, ratio, importance, global_pruning, round_to, ignore_layer,
          data, eval_data, preprocess, out, force):
    """Prune a PyTorch MODEL and write it as OUT/model.pt2, with MACs, parameters and quality before/after."""
    from edgeml.compress.prune import StructuredConfig, UnstructuredConfig
    from edgeml.pipeline import single_pass
    from edgeml.progress import Reporter

    structured = StructuredConfig(ratio=ratio, importance=importance, global_pruning=global_pruning,
                                  round_to=round_to, ignore=tuple(ignore_layer))
    unstructured = UnstructuredConfig(amount=ratio, ignore=tuple(ignore_layer))
    record = single_pass.prune(model, example=example, weights=weights, input_shapes=input_shapes, method=method,
                               structured=structured, unstructured=unstructured, data=data, eval_data=eval_data,
                               preprocess=preprocess, out=out, force=force,
                               reporter=Reporter(Console(stderr=True, soft_wrap=True)))
    click.echo(single_pass.render(record))
    click.echo(f"Wrote {record['output']}/ (model.pt2, report.json, report.md)")


@cli.command()
@model_options
@click.option("--student", required=True, help="The model to train: a .pt2 file (e.g. from `edgeml prune`) "
                                               "or package.module:factory.")
@click.option("--student-weights", type=click.Path(), help="state_dict for a package.module:factory student.")
@click.option("--train-data", type=click.Path(), help="Training data (labels optional; without them the "
                                                      "teacher's outputs are the only targets).")
@click.option("--eval-data", type=click.Path(), help="Judge teacher and student on this data.")
@click.option("--preprocess", metavar="SPEC", help="Image preprocessing for image folders (see optimize).")
@click.option("--epochs", type=int, default=30, show_default=True, help="Most epochs (early stopping may end sooner).")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Softens teacher and student outputs.")
@click.option("--alpha", type=float, default=0.7, show_default=True,
              help="Weight of the teacher's soft targets (1 - alpha on the labels).")
@click.option("--patience", type=int, default=5, show_default=True, help="Epochs without improvement before stopping.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(), help="Output folder  [default: edgeml-out/NAME-distilled]")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def distill(model, example, weights, input_shapes, student, student_weights, train_data, eval_data, preprocess,
            epochs, temperature, alpha, patience, lr, seed, out, force):
    """Distill the teacher MODEL into --student and write it as OUT/model.pt2, with the training curve."""
    from edgeml.compress.distill import DistillConfig
    from edgeml.pipeline import single_pass
    from edgeml.progress import Reporter

    config = DistillConfig(epochs=epochs, temperature=temperature, alpha=alpha, patience=patience, lr=lr, seed=seed)
    record = single_pass.distill(model, student=student, student_weights=student_weights, example=example,
                                 weights=weights, input_shapes=input_shapes, train_data=train_data,
                                 eval_data=eval_data, preprocess=preprocess, config=config, out=out, force=force,
                                 reporter=Reporter(Console(stderr=True, soft_wrap=True)))
    click.echo(single_pass.render(record))
    click.echo(f"Wrote {record['output']}/ (model.pt2, report.json, report.md)")


def _settings(base, flags: dict) -> dict:
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


def _default_out(model, example, suffix: str) -> Path:
    name = example or Path(str(model)).stem.split(":")[-1]
    return Path("edgeml-out") / f"{name}-{suffix}"


RECIPE_FLAGS = ("target", "profile", "precision", "quantizer", "calibration_method", "metric", "max_accuracy_drop",
                "tuning_budget", "distill", "seed", "threads", "measure_seconds")


@cli.command()
def targets():
    """List targets, their candidates, and whether each can run here (on this CPU's features, which
    $EDGEML_CPU_FEATURES overrides)."""
    from rich.markup import escape

    from edgeml.doctor import STATUS_COLOURS, candidate_status
    from edgeml.measure import cpu_features
    from edgeml.profiles import default_profile
    from edgeml.targets import TARGETS

    console = _table_console()
    cpu = cpu_features.describe()
    features = "unknown" if cpu["features"] is None else ", ".join(cpu["features"]) or "none"
    console.print(escape(f"CPU features: {features} ({cpu['features_from']}); "
                         f"INT8 scheme: {cpu['int8_scheme']['name']}"))
    for target in TARGETS.values():
        profile = default_profile(target.name)
        title = f"{target.name}: {target.description}" + (f" (default profile: {profile})" if profile else "")
        table = Table("candidate", "backend", "precision", "quantizer", "status here", title=title,
                      title_justify="left")
        for c in target.candidates:
            here = candidate_status(target, c)
            status = f"[{STATUS_COLOURS[here['status']]}]{here['status']}[/]: {escape(here['detail'])}"
            table.add_row(c.name, c.backend.name, c.precision, c.quantizer or "", status)
        console.print(table)


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Tables, or one JSON object for scripts.")
def doctor(fmt):
    """Show what edgeml can use here: the runtime packages installed (or the extra that adds them), this
    machine's CPU features, memory and GPUs, and whether each target's candidates are measured here,
    checked here with their latency predicted, or not served."""
    import json

    from edgeml.doctor import gather, render

    report = gather()
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        render(report, _table_console())


@cli.group()
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
    _table_console().print(table)


@profiles.command("show")
@click.argument("name")
def profiles_show(name):
    """Show one profile (a bundled NAME or a YAML file) as YAML."""
    import yaml

    from edgeml.profiles import load_profile

    profile = load_profile(name)
    click.echo(f"# {profile.display_name}: {profile.path}")
    click.echo(yaml.safe_dump(profile.to_dict(), sort_keys=False).rstrip())


@cli.command("build-engine")
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


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True,
              help="Markdown, one self-contained HTML file with plots, or the run record as is.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Write to this file  [default: stdout; html: RUN_DIR/report.html]")
@click.option("--merge", type=click.Path(path_type=Path), metavar="FILE",
              help="A device_report.json from `edgeml profile`: adds the latency measured on the device.")
def report(run_dir, fmt, out, merge):
    """Render the report of RUN_DIR, the OUT folder of `edgeml optimize`, from its report.json."""
    import json

    from edgeml.report.load import load_device_report, load_run, merge_device_report
    from edgeml.report.markdown import render_markdown

    run, text = load_run(run_dir)
    if merge is not None:
        run = merge_device_report(run, load_device_report(merge))
        text = json.dumps(run, indent=2) + "\n"
    if fmt == "html":
        from edgeml.report.html import render_html

        text, out = render_html(run), out or run_dir / "report.html"
    elif fmt == "md":
        text = render_markdown(run)
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as e:
        raise EdgemlError(f"cannot write {out}: {e.strerror or first_line(e)}") from e
    click.echo(str(out))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--to", "to", required=True, metavar="ssh://USER@HOST[:PORT]/PATH | USER@HOST:PATH | DIR",
              help="The folder the bundle goes into (as BUNDLE's own name there); read as rsync reads it: a colon "
                   "before any slash means SSH, ./NAME:X is a local folder.")
@click.option("-i", "--identity", type=click.Path(path_type=Path), help="SSH private key file.")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="Passed to ssh/scp/rsync as -o KEY=VALUE, e.g. Port=2222 for USER@HOST:PATH; repeatable.")
@click.option("--verify-remote", is_flag=True, help="Then run the bundle's `run.py --check` there.")
def ship(bundle, to, identity, ssh_options, verify_remote):
    """Copy BUNDLE to a device over SSH (rsync when both ends have it, else scp) or to a folder,
    then check every file there against the manifest's sha256. Run it again to resume an
    interrupted copy: files already there intact are not sent again."""
    from edgeml.deploy.ship import ship as run_ship

    options = {}
    for item in ssh_options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EdgemlError(f"--ssh-option {item}: use KEY=VALUE, e.g. StrictHostKeyChecking=accept-new")
        options[key.strip()] = value
    result = run_ship(bundle, to, identity=identity, ssh_options=options, verify_remote=verify_remote)
    click.echo(f"shipped {bundle} to {result.destination} ({result.transfer})")
    click.echo(f"sent: {', '.join(result.sent) or 'nothing'}")
    if result.kept:
        click.echo(f"already there, intact: {', '.join(result.kept)}")
    click.echo(f"verified: {result.verified} files match the manifest's sha256")
    if result.remote_check is not None:
        click.echo(f"reference check: {result.remote_check}")


@cli.command("profile")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--threads", type=int, help="Inference threads  [default: all logical cores]")
@click.option("--measure-seconds", type=float, default=1.0, show_default=True, help="Minimum timed seconds.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("device_report.json"), show_default=True,
              help="The device report (JSON).")
def profile_command(bundle, threads, measure_seconds, out):
    """Time BUNDLE's artifact on this machine (the device) with its own runtime, batch 1, and write a
    device report that `edgeml report RUN_DIR --merge` puts next to the build's numbers."""
    from edgeml.deploy.on_device import profile_bundle, write_device_report

    result = profile_bundle(bundle, threads=threads, measure_seconds=measure_seconds)
    latency, machine = result["latency"], result["machine"]
    lo, hi = latency["p50_ci95_ms"]
    click.echo(f"{result['bundle']['candidate']} ({result['runtime']['name']} {result['runtime']['version']}) on "
               f"{machine['cpu']} ({machine['architecture']}), {result['threads']} thread(s)")
    click.echo(f"input: {result['input']}")
    click.echo(f"p50 {latency['p50_ms']:.4f} ms (95% CI {lo:.4f}-{hi:.4f}), p90 {latency['p90_ms']:.4f} ms, "
               f"p99 {latency['p99_ms']:.4f} ms, {latency['throughput_per_s']:.0f} inferences/s "
               f"({latency['runs']} runs)")
    click.echo(f"wrote {write_device_report(result, out)}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--fleet", "fleet_file", type=click.Path(path_type=Path), required=True,
              help="The fleet file: devices (name, `to` as for ship, ssh settings) and thresholds.")
@click.option("--canary", type=int, default=1, show_default=True, metavar="N",
              help="The first N devices of the fleet take the bundle first; the rest only when they all pass.")
@click.option("--max-latency-ratio", type=float, metavar="RATIO",
              help="A canary fails when it is slower than RATIO times the release the device runs (or, where none, "
                   "the build report's p50) beyond doubt  [default: the fleet file's, else 1.5]")
@click.option("--rollback", is_flag=True, help="Instead: point every device's current back at its previous release.")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Folder of the log, rollout.jsonl (appended)  [default: edgeml-rollout beside the fleet file]")
def rollout(bundle, fleet_file, canary, max_latency_ratio, rollback, out):
    """Roll BUNDLE out to the devices of a fleet: into DEST/releases/<id> on each, canaries first, each
    checked there (files' sha256 and run.py --check) and the canaries timed in alternating rounds against
    the release they run (else the build report's p50). Only when the canaries pass is DEST/current
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


@cli.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True,
              help="The archive, e.g. model.edgeml.tar.gz")
def pack(bundle_dir, out):
    """Pack BUNDLE_DIR (OUT/bundle of `edgeml optimize`) into one .tar.gz, written atomically. The same
    bundle always gives the same bytes (sorted entries, no times, owners or other metadata)."""
    from edgeml.bundle.pack import pack as pack_bundle

    click.echo(str(pack_bundle(bundle_dir, out)))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
def verify(bundle):
    """Check BUNDLE (a bundle folder, or a .tar.gz from `edgeml pack`): the manifest against its schema,
    every file's size and sha256, no file added, and the reference vectors run with the runtime found
    here. Exits 0 when everything matches, 1 when a check fails, 2 when BUNDLE cannot be used."""
    from edgeml.bundle.verify import verify as verify_bundle

    result = verify_bundle(bundle)
    manifest = result.manifest
    backend = manifest.get("backend") if isinstance(manifest.get("backend"), dict) else {}
    # a manifest that fails its schema may lack any of these: the table then shows that check failing
    table = Table("check", "result", "detail",
                  title=f"{bundle}: {manifest.get('candidate', '?')} ({backend.get('name', '?')} "
                  f"{manifest.get('precision', '?')}, target {manifest.get('target', '?')})", title_justify="left")
    for c in result.checks:
        table.add_row(c.name, "ok" if c.passed else "[red]FAILED[/red]", c.detail)
    _table_console().print(table)
    if result.checked_with:
        click.echo(result.checked_with)
    if not result.passed:
        click.echo(f"FAILED: {', '.join(result.failed)}")
        sys.exit(1)
    if result.not_run:
        raise EdgemlError(f"the files match the manifest, but the reference vectors cannot run here: {result.not_run}")
    click.echo("verified: the files match the manifest and the outputs match the reference vectors")


@cli.command("serve")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this machine).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port to listen on.")
@click.option("--threads", type=int, help="Inference threads  [default: all logical cores]")
@click.option("--max-batch", type=int, default=1, show_default=True,
              help="Micro-batching: run up to B queued samples in one call (models with a dynamic batch dimension).")
@click.option("--max-wait-ms", type=float, default=2.0, show_default=True,
              help="With --max-batch: how long the first request waits for others to join its batch.")
@click.option("--token", envvar="EDGEML_SERVE_TOKEN", help="Require 'Authorization: Bearer TOKEN' (or set "
              "EDGEML_SERVE_TOKEN).")
@click.option("--max-body-mb", type=float, default=32, show_default=True, help="Largest request body (413 above).")
@click.option("--max-samples", type=int, default=1024, show_default=True, help="Most samples in one request.")
@click.option("--body-timeout", type=float, default=30, show_default=True, metavar="SECONDS",
              help="Longest wait for more of a request's body (408 after it).")
def serve_command(bundle, host, port, threads, max_batch, max_wait_ms, token, max_body_mb, max_samples,
                  body_timeout):
    """Serve BUNDLE over HTTP: POST /v1/predict (JSON or .npz), GET /health, GET /metrics (Prometheus).
    The bundle's checks (`edgeml verify`) run first: a bundle that fails them is not served (exit 2)."""
    from edgeml.serve import serve

    serve(bundle, host=host, port=port, threads=threads, max_batch=max_batch, max_wait_ms=max_wait_ms, token=token,
          max_body_mb=max_body_mb, max_samples=max_samples, body_timeout_s=body_timeout,
          announce=lambda line: click.echo(line, err=True))


@cli.command()
@click.argument("url")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Print once and exit.")
@click.option("--token", envvar="EDGEML_SERVE_TOKEN", help="The server's bearer token (or set EDGEML_SERVE_TOKEN).")
def monitor(url, interval, once, token):
    """Watch a running `edgeml serve` at URL (e.g. http://127.0.0.1:8000): requests, errors, p50 latency and
    the drift scores of each input and output, from its /metrics and /health. Ctrl-C stops it; a server
    that cannot be reached exits 2."""
    import time

    from rich.console import Group
    from rich.live import Live

    from edgeml.serve.monitor import fetch, render

    if once:
        line, table = render(fetch(url, token))
        click.echo(line)
        _table_console().print(table)
        return
    try:
        with Live(Group(*render(fetch(url, token))), auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(Group(*render(fetch(url, token))), refresh=True)
    except KeyboardInterrupt:
        pass


def _table_console() -> Console:
    """Tables fit the terminal; piped into a file or another program they keep whole lines."""
    return Console(width=None if sys.stdout.isatty() else 200)


def main() -> None:
    cli(prog_name="edgeml")
