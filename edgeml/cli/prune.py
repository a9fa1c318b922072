"""`edgeml prune`."""

from __future__ import annotations

import click

from edgeml.cli.common import (
    echo_single_pass,
    force_option,
    ignore_layer_option,
    image_preprocess_option,
    model_options,
    reporter,
)
from edgeml.compress.prune import IMPORTANCES


@click.command()
@model_options
@click.option("--method", type=click.Choice(["structured", "unstructured", "2:4"]), default="structured",
              show_default=True, help="Channels (faster everywhere), single weights (smaller), or 2:4 (NVIDIA GPUs).")
@click.option("--ratio", type=float, default=0.5, show_default=True,
              help="Fraction of channels (structured) or weights (unstructured) to remove.")
@click.option("--importance", type=click.Choice(IMPORTANCES), default="l1", show_default=True,
              help="Channel importance (taylor uses gradients on --data).")
@click.option("--global", "global_pruning", is_flag=True, help="Rank channels across layers, not per layer.")
@click.option("--round-to", type=int, default=8, show_default=True, help="Keep channel counts a multiple of this.")
@ignore_layer_option
@click.option("--data", type=click.Path(), help="Example inputs (and Taylor's gradients): .npz or image folder.")
@click.option("--eval-data", type=click.Path(), help="Judge quality before and after on this data.")
@image_preprocess_option
@click.option("-o", "--out", type=click.Path(), help="Output folder  [default: edgeml-out/NAME-pruned]")
@force_option
def prune(model, example, weights, input_shapes, method, ratio, importance, global_pruning, round_to, ignore_layer,
          data, eval_data, preprocess, out, force):
    """Prune a PyTorch MODEL and write it as OUT/model.pt2, with MACs, parameters and quality before/after."""
    from edgeml.compress.prune import StructuredConfig, UnstructuredConfig
    from edgeml.pipeline import single_pass

    structured = StructuredConfig(ratio=ratio, importance=importance, global_pruning=global_pruning,
                                  round_to=round_to, ignore=tuple(ignore_layer))
    unstructured = UnstructuredConfig(amount=ratio, ignore=tuple(ignore_layer))
    echo_single_pass(single_pass.prune(
        model, example=example, weights=weights, input_shapes=input_shapes, method=method, structured=structured,
        unstructured=unstructured, data=data, eval_data=eval_data, preprocess=preprocess, out=out, force=force,
        reporter=reporter()))
