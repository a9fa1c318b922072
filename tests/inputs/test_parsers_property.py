"""Property tests of the parsers: any recipe or --input-shape text gives a valid object or the
project's user error (EdgemlError), never another exception; valid values survive a round trip."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgeml.compress.distill import DistillConfig
from edgeml.compress.prune import IMPORTANCES, StructuredConfig
from edgeml.compress.quantize import CALIBRATION_METHODS
from edgeml.errors import EdgemlError
from edgeml.inputs.specs import DTYPES, TensorSpec, parse_input_shape
from edgeml.measure.evaluate import METRICS
from edgeml.pipeline.recipe import PRECISIONS, QUANTIZERS, Recipe, dump_recipe, load_recipe, make_recipe, parse_settings

PROPERTY = settings(max_examples=200, deadline=None)

SETTINGS = [f.name for f in fields(Recipe) if f.name != "distill_config"]
NESTED = ["ratio", "importance", "global", "round_to", "ignore", "enabled", "epochs", "batch_size", "lr",
          "temperature", "alpha", "patience", "max_seconds", "seed"]
WORDS = [*PRECISIONS, *QUANTIZERS, *METRICS, *CALIBRATION_METHODS, *IMPORTANCES, "cpu", "jetson", "auto", "90s",
         "10m", "1h30m", "0s", "soon", "raspberry-pi-5", "conv1"]

scalars = (st.none() | st.booleans() | st.integers(-3, 100) | st.integers() | st.floats()
           | st.floats(0, 2) | st.sampled_from(WORDS) | st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(NESTED) | st.text(max_size=6), inner, max_size=4),
                      max_leaves=8)
recipes = st.dictionaries(st.sampled_from(SETTINGS) | st.text(max_size=8), values, max_size=5)


def _check(recipe: Recipe) -> None:
    """What every recipe that make_recipe returns must satisfy."""
    assert recipe.precision in PRECISIONS and recipe.quantizer in QUANTIZERS and recipe.metric in METRICS
    assert recipe.calibration_method in CALIBRATION_METHODS and isinstance(recipe.target, str)
    assert 0 <= recipe.max_accuracy_drop < 1
    assert math.isfinite(recipe.tuning_budget) and recipe.tuning_budget > 0
    assert math.isfinite(recipe.measure_seconds) and recipe.measure_seconds > 0
    assert recipe.threads is None or (type(recipe.threads) is int and recipe.threads >= 1)
    assert type(recipe.seed) is int and 0 <= recipe.seed < 2**32
    assert recipe.profile is None or isinstance(recipe.profile, str)
    assert recipe.distill in (None, True, False) and isinstance(recipe.distill_config, DistillConfig)
    assert recipe.prune is None or (isinstance(recipe.prune, StructuredConfig) and 0 < recipe.prune.ratio < 1)


def _read(tmp_path_factory, text: str) -> Recipe:
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(text)
    return make_recipe(**load_recipe(path))


@PROPERTY
@given(recipes)
def test_random_settings_give_a_recipe_or_a_user_error(tmp_path_factory, data):
    try:
        recipe = make_recipe(**parse_settings(data))
    except EdgemlError:
        return
    _check(recipe)
    assert _read(tmp_path_factory, dump_recipe(recipe)) == recipe      # written and read back unchanged


@PROPERTY
@given(st.one_of(recipes.map(lambda d: yaml.safe_dump(d, allow_unicode=True)), st.text(max_size=60)))
def test_random_recipe_files_give_a_recipe_or_a_user_error(tmp_path_factory, text):
    try:
        recipe = _read(tmp_path_factory, text)
    except EdgemlError as e:
        assert "\n" not in str(e)
        return
    _check(recipe)


SHAPE_ALPHABET = "0123456789x,?:_-./ abinputdsfloat"
shape_texts = st.text(SHAPE_ALPHABET, max_size=24) | st.text(max_size=24)


def _text(spec: TensorSpec) -> str:
    """--input-shape text for `spec`; commas separate the dimensions (an x may be part of a name)."""
    dims = ",".join("?" if d is None else str(d) for d in spec.shape)
    return (f"{spec.name}:" if spec.name else "") + dims + (f":{spec.dtype}" if spec.dtype else "")


def _check_spec(spec: TensorSpec) -> None:
    assert spec.shape and spec.dtype in (None, *DTYPES)
    for d in spec.shape:
        assert d is None or (type(d) is int and d > 0) or (isinstance(d, str) and d.isidentifier())


@PROPERTY
@given(shape_texts)
def test_random_shape_strings_give_a_spec_or_a_user_error(text):
    try:
        spec = parse_input_shape(text)
    except EdgemlError as e:
        assert "\n" not in str(e)
        return
    _check_spec(spec)
    assert parse_input_shape(_text(spec)) == spec


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,8}", fullmatch=True)
dims = st.integers(1, 4096) | st.none() | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)


@PROPERTY
@given(st.builds(TensorSpec, names, st.lists(dims, min_size=1, max_size=5).map(tuple),
                 st.none() | st.sampled_from(DTYPES)))
def test_valid_shape_strings_round_trip(spec):
    assume(len(spec.shape) > 1 or "x" not in str(spec.shape[0]))    # one dimension has no comma to split on
    assume(spec.shape.count(None) <= 1)                              # one '?' at most: it marks the batch axis
    spec = replace(spec, batch_axis=spec.shape.index(None) if None in spec.shape else 0)
    assert parse_input_shape(_text(spec)) == spec
    if not any(isinstance(d, str) for d in spec.shape):
        assert parse_input_shape(_text(spec).replace(",", "x")) == spec
