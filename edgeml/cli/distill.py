"""`edgeml distill`."""

from __future__ import annotations

import click

from edgeml.cli.common import echo_single_pass, force_option, image_preprocess_option, model_options, reporter


@click.command()
@model_options
@click.option("--student", required=True, help="The model to train: a .pt2 file (e.g. from `edgeml prune`) "
                                               "or package.module:factory.")
@click.option("--student-weights", type=click.Path(), help="state_dict for a package.module:factory student.")
@click.option("--train-data", type=click.Path(), help="Training data (labels optional; without them the "
                                                      "teacher's outputs are the only targets).")
@click.option("--eval-data", type=click.Path(), help="Judge teacher and student on this data.")
@image_preprocess_option
@click.option("--epochs", type=int, default=30, show_default=True, help="Most epochs (early stopping may end sooner).")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Softens teacher and student outputs.")
@click.option("--alpha", type=float, default=0.7, show_default=True,
              help="Weight of the teacher's soft targets (1 - alpha on the labels).")
@click.option("--patience", type=int, default=5, show_default=True, help="Epochs without improvement before stopping.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", type=click.Path(), help="Output folder  [default: edgeml-out/NAME-distilled]")
@force_option
def distill(model, example, weights, input_shapes, student, student_weights, train_data, eval_data, preprocess,
            epochs, temperature, alpha, patience, lr, seed, out, force):
    """Distill the teacher MODEL into --student and write it as OUT/model.pt2, with the training curve."""
    from edgeml.compress.distill import DistillConfig
    from edgeml.pipeline import single_pass

    config = DistillConfig(epochs=epochs, temperature=temperature, alpha=alpha, patience=patience, lr=lr, seed=seed)
    echo_single_pass(single_pass.distill(
        model, student=student, student_weights=student_weights, example=example, weights=weights,
        input_shapes=input_shapes, train_data=train_data, eval_data=eval_data, preprocess=preprocess, config=config,
        out=out, force=force, reporter=reporter()))
