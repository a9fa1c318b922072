import pytest
import torch

from edgeml.errors import ModelError
from edgeml.inputs.models import load_model
from edgeml.inputs.specs import TensorSpec


def test_each_kind_loads_with_its_inputs(files):
    onnx_model = load_model(files["digits.onnx"])
    assert onnx_model.kind == "onnx" and onnx_model.inputs == [TensorSpec("input", ("n", 1, 8, 8), "float32")]
    program = load_model(files["digits.pt2"])
    assert program.kind == "exported_program"
    assert program.inputs == [TensorSpec("input", ("batch", 1, 8, 8), "float32")]
    script = load_model(files["digits.ts"], input_shapes=["1x1x8x8"])
    assert script.kind == "torchscript" and script.inputs[0].name == "input"
    factory = load_model("edgeml.examples:DigitsCNN", files["weights.pt"], ["1x1x8x8"])
    assert factory.kind == "factory" and factory.reload["weights"] == str(files["weights.pt"])
    x = torch.zeros(2, 1, 8, 8)
    assert torch.allclose(script.callable(x), factory.callable(x), atol=1e-5)
    assert torch.allclose(program.callable(x), factory.callable(x), atol=1e-5)


def test_in_memory_module(digits):
    source = load_model(digits.model, input_shapes=["1x1x8x8"])
    assert source.kind == "module" and source.reload is None and len(source.sha256) == 64
    with pytest.raises(ModelError, match="not list"):
        load_model([1, 2])


def test_truncated_exported_program(files, tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(files["digits.pt2"].read_bytes()[:20000])
    with pytest.raises(ModelError, match="bad.pt2"):
        load_model(bad)


def test_factory_must_return_a_module():
    with pytest.raises(ModelError, match="returned dict, not a torch.nn.Module"):
        load_model("builtins:dict")
