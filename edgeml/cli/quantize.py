"""`edgeml quantize`."""

from __future__ import annotations

import click

import edgeml
from edgeml.cli.common import (
    data_options,
    default_out,
    echo_run,
    model_options,
    quantize_options,
    recipe_settings,
    reporter,
    run_options,
)
from edgeml.pipeline.recipe import PRECISIONS


@click.command()
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

    run = edgeml.optimize(
        model, example=example, weights=weights, input_shapes=input_shapes, data=data, split=split,
        calib_data=calib_data, eval_data=eval_data, train_data=train_data, preprocess=preprocess, force=force,
        out=out or default_out(model, example, "quantized"), reporter=reporter(), debug=ctx.obj["debug"],
        cache=flags["cache"], cache_dir=flags["cache_dir"], **recipe_settings(Recipe(), flags))
    echo_run(run)
