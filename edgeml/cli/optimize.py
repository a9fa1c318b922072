"""`edgeml optimize`."""

from __future__ import annotations

import click

import edgeml
from edgeml.cli.common import (
    data_options,
    echo_run,
    ignore_layer_option,
    max_ppl_increase_option,
    model_options,
    precision_option,
    quantize_options,
    recipe_settings,
    reporter,
    run_options,
)
from edgeml.compress.prune import IMPORTANCES


@click.command()
@model_options
@click.option("--recipe", type=click.Path(), help="YAML recipe with the settings; flags given here override it.")
@click.option("--target", help="Deployment target: cpu, mobile, jetson, gpu (see `edgeml targets`)  [default: cpu]")
@click.option("--profile", metavar="NAME|FILE",
              help="Device profile (`edgeml profiles list`) or your own YAML  [default: per target]")
@precision_option
@quantize_options
@max_ppl_increase_option
@click.option("--prune", type=float, metavar="RATIO", help="Structured pruning: fraction of channels to remove.")
@click.option("--prune-importance", type=click.Choice(IMPORTANCES), help="Channel importance  [default: l1]")
@click.option("--round-to", type=int, help="Keep channel counts a multiple of this  [default: 8]")
@ignore_layer_option
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
    with --weights; or a causal language model: a Hugging Face folder or a GGUF file (text for
    --calib-data / --eval-data: a .txt file or a folder of them, one document each).
    """
    from edgeml.pipeline.recipe import Recipe, load_recipe, make_recipe

    if track:
        from edgeml.report.tracking import check_tracker

        check_tracker(track)
    base = make_recipe(**load_recipe(recipe)) if recipe else Recipe()
    run = edgeml.optimize(
        model, recipe=base, example=example, weights=weights, input_shapes=input_shapes, data=data, split=split,
        calib_data=calib_data, eval_data=eval_data, train_data=train_data, preprocess=preprocess, out=out,
        force=force, reporter=reporter(), debug=ctx.obj["debug"], track=track, cache=flags["cache"],
        cache_dir=flags["cache_dir"], **recipe_settings(base, flags))
    echo_run(run)
