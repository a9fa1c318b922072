"""The first phase of `optimize`: what the user gave (the model, the data, the recipe), checked and loaded."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgeml.compress.quantize import Int8Config
from edgeml.errors import EdgemlError
from edgeml.inputs import data as data_mod
from edgeml.inputs.data import Dataset
from edgeml.inputs.models import SourceModel, load_model, safe_loading
from edgeml.pipeline.recipe import Recipe, load_recipe, make_recipe
from edgeml.progress import Reporter

EXAMPLES = ("digits",)
DEFAULT_SPLIT = 0.3           # calibration share when one dataset is split
RANDOM_SAMPLES = 64           # samples drawn when no data is given


@dataclass(frozen=True)
class Given:
    """The model and data arguments of `optimize`, as the user gave them."""
    model: Any = None
    example: str | None = None
    weights: str | Path | None = None
    input_shapes: list[str] | tuple[str, ...] = ()
    data: str | Path | None = None
    split: float | None = None
    calib_data: str | Path | None = None
    eval_data: str | Path | None = None
    train_data: str | Path | None = None
    preprocess: str | None = None

    def check(self) -> None:
        if (self.model is None) == (self.example is None):
            raise EdgemlError("give a MODEL or --example digits (one of them)")
        if self.example is not None and self.example not in EXAMPLES:
            raise EdgemlError(f"unknown example '{self.example}'; available: {', '.join(EXAMPLES)}")
        if self.example is not None and any(x is not None for x in (self.data, self.calib_data, self.eval_data,
                                                                     self.train_data)):
            raise EdgemlError("--example brings its own data; do not combine it with --data/--calib-data/"
                              "--eval-data/--train-data")
        if self.data is not None and (self.calib_data is not None or self.eval_data is not None):
            raise EdgemlError("use either --data (split into calibration and evaluation) or --calib-data/--eval-data")
        if self.split is not None and self.data is None:
            raise EdgemlError("--split divides the dataset given with --data; give --data too")

    def describe(self) -> dict:
        """The arguments as the run record keeps them (paths as text)."""
        model = self.model
        return {"model": None if model is None else str(model) if isinstance(model, (str, Path))
                else type(model).__name__,
                "example": self.example, "weights": _text(self.weights), "input_shapes": list(self.input_shapes),
                "data": _text(self.data), "split": self.split, "calib_data": _text(self.calib_data),
                "eval_data": _text(self.eval_data), "train_data": _text(self.train_data),
                "preprocess": self.preprocess}

    def default_name(self) -> str:
        """The name OUT is called after when none is given: the example, the model file's stem, the factory."""
        if self.example is not None:
            return self.example
        if isinstance(self.model, (str, Path)):
            text = str(self.model)
            return Path(text).stem if Path(text).exists() else text.split(":")[-1]
        return type(self.model).__name__


@dataclass(frozen=True)
class Inputs:
    """The loaded model and data."""
    source: SourceModel
    calibration: Dataset
    evaluation: Dataset
    train: Dataset | None


def make_run_recipe(recipe: Recipe | str | Path | None, settings: dict) -> Recipe:
    """The effective recipe: `recipe` (a Recipe, a YAML file or None) with the keyword `settings` over it."""
    unknown = sorted(set(settings) - {f.name for f in fields(Recipe)})
    if unknown:
        raise TypeError(f"optimize() got unexpected keyword argument(s): {', '.join(unknown)}")
    if recipe is None:
        base = Recipe()
    elif isinstance(recipe, Recipe):
        base = recipe
    else:
        base = make_recipe(**load_recipe(recipe))
    return make_recipe(base, **settings)


def load(given: Given, *, seed: int, reporter: Reporter, safe: bool) -> Inputs:
    """The model and the calibration, evaluation and training data; random data (with a warning) where none
    is given."""
    if given.example is not None:
        from edgeml.examples import digits_example, digits_source

        ex = digits_example()
        source = digits_source(ex)
        source.notes.append("built-in digits example: CNN " + ("reused from the cache" if ex.cached else
                            "trained now") + f" ({ex.weights}); calibration = validation split, "
                            "evaluation = test split, training = train split")
        return Inputs(source, ex.validation, ex.test, ex.train)

    with safe_loading() if safe else contextlib.nullcontext():
        source = load_model(given.model, given.weights, given.input_shapes)
    if source.kind == "factory" and source.path is None:
        reporter.warn(f"no --weights given: using the weights {given.model}() creates")

    def read(path):
        return data_mod.load_data(path, source.inputs, given.preprocess)
    if given.data is not None:
        calibration, evaluation = data_mod.split(read(given.data),
                                                 given.split if given.split is not None else DEFAULT_SPLIT, seed)
    else:
        calibration = read(given.calib_data) if given.calib_data is not None else None
        evaluation = read(given.eval_data) if given.eval_data is not None else None
    if calibration is None:
        calibration = data_mod.random_dataset(source.inputs, RANDOM_SAMPLES, seed, "calibration")
        reporter.warn("no calibration data: INT8 candidates are calibrated on random inputs, "
                      "so their accuracy is likely poor; give --calib-data or --data")
    if evaluation is None:
        evaluation = data_mod.random_dataset(source.inputs, RANDOM_SAMPLES, seed + 1, "evaluation")
        reporter.warn("no evaluation data: candidates are compared with the original on random "
                      "inputs (fidelity only, no accuracy); give --eval-data or --data")
    overlap = data_mod.check_disjoint(calibration, evaluation)
    if overlap:
        reporter.warn(overlap)
    train = read(given.train_data) if given.train_data is not None else None
    if train is not None:
        overlap = data_mod.check_disjoint(train, evaluation)
        if overlap:
            reporter.warn(overlap.replace("calibration", "training"))
    return Inputs(source, calibration, evaluation, train)


def data_notes(inputs: Inputs, metric: str, compressed: bool) -> list[str]:
    """What each dataset was used for, as the report's Data section says it."""
    calibration, evaluation, train = inputs.calibration, inputs.evaluation, inputs.train
    used = min(len(calibration), Int8Config.max_calibration_samples)
    notes = [f"calibration: {calibration.source}, {len(calibration)} samples"
             + (f" (INT8 passes calibrate on the first {used})" if used < len(calibration) else "")
             + "; used for INT8 ranges and, when a candidate breaks the budget, for the sensitivity search",
             f"evaluation: {evaluation.source}, {len(evaluation)} samples; used only to judge the rows below"]
    if train is not None:
        notes.append(f"training: {train.source}, {len(train)} samples"
                     + ("; pruning importance and distillation (10% held out for early stopping)" if compressed
                        else "; no pruning or distillation asked")
                     + "; and, when the calibration data is too few to resolve the budget, samples for the "
                       "accuracy-budget search to judge on")
    if calibration.synthetic:
        notes.append("calibration used RANDOM inputs: INT8 ranges do not reflect real data")
    if evaluation.synthetic:
        notes.append("evaluation used RANDOM inputs: the numbers are fidelity to the original "
                     "model on random data, not accuracy")
    explain = {"accuracy": "top-1 accuracy against the labels",
               "agreement": "top-1 agreement with the original model (no labels given)",
               "cosine": "mean cosine similarity to the original model's outputs",
               "r2": "R² of the outputs against the original model's (1 - squared error / their variance across "
                     "the samples)"}
    notes.append(f"quality metric: {explain[metric]}; drop = original - candidate")
    return notes


def _text(value) -> str | None:
    return None if value is None else str(value)
