import pytest

from edgeml.errors import InputSpecError
from edgeml.inputs.specs import TensorSpec, parse_input_shape, reconcile


@pytest.mark.parametrize("text, expected", [
    ("1x3x224x224", TensorSpec("", (1, 3, 224, 224), None)),
    ("input:1x3x224x224", TensorSpec("input", (1, 3, 224, 224), None)),
    ("ids:1,128:int64", TensorSpec("ids", (1, 128), "int64")),
    ("x:?x3x32x32", TensorSpec("x", (None, 3, 32, 32), None)),
])
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["", "input:", "1x0x8", "x:1x2:notadtype", "a b"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(InputSpecError):
        parse_input_shape(text)


def test_reconcile_fills_symbolic_dims_and_refuses_contradictions():
    model = [TensorSpec("input", ("batch", 3, None, None), "float32")]
    merged = reconcile(model, [parse_input_shape("input:1x3x64x48")])
    assert merged == [TensorSpec("input", (1, 3, 64, 48), "float32")]
    with pytest.raises(InputSpecError, match="fixes dimension 1 to 3"):
        reconcile(model, [parse_input_shape("input:1x4x64x64")])
    with pytest.raises(InputSpecError, match="takes float32"):
        reconcile(model, [parse_input_shape("input:1x3x64x64:int64")])
    with pytest.raises(InputSpecError, match="model's inputs are input"):
        reconcile(model, [parse_input_shape("image:1x3x64x64")])


def test_reconcile_without_model_shapes_names_inputs_by_position():
    specs = reconcile(None, [parse_input_shape("1x8"), parse_input_shape("1x8:int64")], default_names=["a", "b"])
    assert specs == [TensorSpec("a", (1, 8), "float32"), TensorSpec("b", (1, 8), "int64")]
    with pytest.raises(InputSpecError, match="takes 2 input"):
        reconcile(None, [parse_input_shape("1x8")], default_names=["a", "b"])
    with pytest.raises(InputSpecError, match="inputs: a, b"):
        reconcile(None, [], default_names=["a", "b"])
