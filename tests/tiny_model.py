"""A tiny model that every runtime converts and every quantizer quantizes in a second or two, for the tests that go
over all of them (tests/runtimes/test_registry.py, tests/compress/test_quantizer_registry.py)."""

import warnings
from pathlib import Path

import numpy as np
import torch

from edgeml.inputs.data import Dataset
from edgeml.inputs.models import load_model
from edgeml.targets.base import BuildContext


class Tiny(torch.nn.Module):
    """A convolution and a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, input):
        return self.fc(torch.relu(self.conv(input)).flatten(1))


def tiny_model(folder: Path, samples: int) -> dict:
    """The tiny model as ONNX (in `folder`) and as PyTorch source, `samples` random calibration samples, feeds and
    PyTorch's outputs on them."""
    torch.manual_seed(0)
    module = Tiny().eval()
    data = np.random.default_rng(0).standard_normal((samples, 3, 8, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(data[:2]),), str(folder / "tiny.onnx"), dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "n"}, "output": {0: "n"}})
    feeds = {"input": data[:5]}         # more than one batch of the runtimes that convert with a batch of 1
    with torch.inference_mode():
        reference = module(torch.from_numpy(feeds["input"])).numpy()
    context = BuildContext(calibration=Dataset({"input": data}, None, "random", synthetic=True),
                           source=load_model(module, input_shapes=["input:?x3x8x8"]))
    return {"onnx": folder / "tiny.onnx", "context": context, "feeds": feeds, "reference": reference,
            "folder": folder}
