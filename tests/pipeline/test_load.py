"""The load phase of optimize: the arguments checked, described and named before anything is read."""

from __future__ import annotations

import pytest

from edgeml.errors import EdgemlError
from edgeml.pipeline.load import Given, make_run_recipe
from edgeml.pipeline.recipe import Recipe


@pytest.mark.parametrize("given, message", [
    (Given(), "give a MODEL or --example digits (one of them)"),
    (Given(model="m.onnx", example="digits"), "give a MODEL or --example digits (one of them)"),
    (Given(example="cats"), "unknown example 'cats'; available: digits"),
    (Given(example="digits", data="d.npz"), "--example brings its own data"),
    (Given(model="m.onnx", data="d.npz", eval_data="e.npz"), "use either --data"),
    (Given(model="m.onnx", split=0.5), "--split divides the dataset given with --data"),
])
def test_arguments_that_cannot_go_together_are_refused_before_anything_is_read(given, message):
    with pytest.raises(EdgemlError, match=message.replace("(", r"\(").replace(")", r"\)")):
        given.check()


def test_the_record_keeps_the_arguments_as_text_and_out_is_named_after_the_model(tmp_path):
    model = tmp_path / "detector.onnx"
    model.write_bytes(b"")
    given = Given(model=model, data=tmp_path / "d.npz", split=0.25)
    given.check()
    described = given.describe()
    assert described["model"] == str(model) and described["data"] == str(tmp_path / "d.npz")
    assert described["split"] == 0.25 and described["calib_data"] is None and described["input_shapes"] == []
    assert given.default_name() == "detector"
    assert Given(model="torchvision.models:resnet18").default_name() == "resnet18"
    assert Given(example="digits").default_name() == "digits"


def test_keyword_settings_override_the_recipe_and_unknown_ones_are_refused():
    recipe = make_run_recipe(Recipe(target="mobile"), {"max_accuracy_drop": 0.02})
    assert recipe.target == "mobile" and recipe.max_accuracy_drop == 0.02
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        make_run_recipe(None, {"targte": "cpu"})
