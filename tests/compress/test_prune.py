"""Pruning passes on real modules: the trained digits CNN and small models built here."""

import dataclasses
import json
import warnings
import zlib

import numpy as np
import onnxruntime as ort
import openvino as ov
import pytest
import torch
from torch import nn

from edgeml.compress.prune import StructuredConfig, UnstructuredConfig
from edgeml.compress.prune.semistructured import prune_2to4, verify_2to4
from edgeml.compress.prune.structured import prune_structured
from edgeml.compress.prune.unstructured import prune_unstructured
from edgeml.errors import EdgemlError

PRUNABLE = (nn.Conv2d, nn.Linear)


def inputs(digits, n=64):
    return torch.from_numpy(digits.test.inputs["input"][:n])


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def macs(model, x):
    """Conv and Linear multiply-accumulates of one forward, counted from the layers' real outputs."""
    total = []

    def hook(m, _, out):
        per_output = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] \
            if isinstance(m, nn.Conv2d) else m.in_features
        total.append(out.numel() * per_output)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, PRUNABLE)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(total)


def width(m):
    return (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d) else (m.in_features, m.out_features)


def kept_rows(original, pruned):
    """Indices of the original output channels a pruned layer kept (its rows are a subset)."""
    rows = original.weight.detach().flatten(1)
    return [int(torch.cdist(r[None], rows).argmin()) for r in pruned.weight.detach().flatten(1)]


# --- structured ---------------------------------------------------------------------------------

def test_structured_l1_removes_half_the_channels_and_runs_in_every_runtime(digits, tmp_path):
    model, x = digits.model, inputs(digits)
    before = snapshot(model)
    result = prune_structured(model, (x,), StructuredConfig(ratio=0.5, importance="l1", round_to=8))
    pruned = result.model

    assert_unchanged(model, before)
    assert model.features[0].out_channels == 32
    assert not pruned.training
    assert macs(model, x) / macs(pruned, x) >= 1.8
    assert result.macs_ratio >= 1.8 and result.macs_after < result.macs_before
    assert result.params_after == sum(p.numel() for p in pruned.parameters())
    assert json.loads(json.dumps(result.to_dict()))["kind"] == "structured"

    layers = {n: m for n, m in pruned.named_modules() if isinstance(m, PRUNABLE)}
    originals = dict(model.named_modules())
    assert {r["name"]: (r["in_after"], r["out_after"]) for r in result.layers} == \
        {n: width(m) for n, m in layers.items()}
    assert width(layers["classifier.3"])[1] == 10
    assert result.extra["output_layers"] == ["classifier.3"]
    for name, m in layers.items():
        if name != "classifier.3":
            out = width(m)[1]
            assert out % 8 == 0 and out == width(originals[name])[1] // 2, name

    with torch.no_grad():
        expected = pruned(x).numpy()
    assert expected.shape == (64, 10)
    path = tmp_path / "pruned.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(pruned, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    feeds = {"input": x.numpy()}
    np.testing.assert_allclose(ort.InferenceSession(str(path)).run(None, feeds)[0], expected, atol=1e-4)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(compiled(feeds)[0], expected, atol=1e-4)


def test_taylor_importance_uses_the_data(digits):
    model, x = digits.model, inputs(digits)
    l1 = prune_structured(model, (x,), StructuredConfig(importance="l1"))
    taylor = prune_structured(model, (x,), StructuredConfig(importance="taylor"), data=digits.validation)
    unlabelled = dataclasses.replace(digits.validation, labels=None)
    self_labelled = prune_structured(model, (x,), StructuredConfig(importance="taylor"), data=unlabelled)

    assert taylor.extra["taylor_samples"] == 256
    for result in (taylor, self_labelled):
        assert result.model(x).shape == (64, 10)
        assert result.macs_ratio == pytest.approx(l1.macs_ratio)
        assert all(p.grad is None for p in result.model.parameters())
    # Gradients, not magnitudes, chose the channels.
    kept = {name: sorted(kept_rows(model.features[0], r.model.features[0]))
            for name, r in (("l1", l1), ("taylor", taylor), ("self", self_labelled))}
    assert kept["taylor"] != kept["l1"] and kept["self"] != kept["l1"]


def test_taylor_importance_without_data_is_a_user_error(digits):
    with pytest.raises(EdgemlError, match="data"):
        prune_structured(digits.model, (inputs(digits),), StructuredConfig(importance="taylor"))


def test_ignored_layers_are_kept_whole(digits):
    result = prune_structured(digits.model, (inputs(digits),), StructuredConfig(ignore=("features.2",)))
    widths = {r["name"]: r for r in result.layers}
    kept = widths["features.2"]
    assert (kept["in_after"], kept["out_after"]) == (kept["in_before"], kept["out_before"]) == (32, 64)
    assert widths["features.5"]["out_after"] == 64             # the rest is still pruned
    assert torch.equal(result.model.features[2].weight, digits.model.features[2].weight)


@pytest.mark.parametrize("make", [
    lambda: StructuredConfig(ratio=0.0),
    lambda: StructuredConfig(ratio=1.0),
    lambda: StructuredConfig(ratio=1.5),
    lambda: StructuredConfig(importance="l3"),
    lambda: StructuredConfig(round_to=0),
    lambda: UnstructuredConfig(amount=-0.1),
    lambda: UnstructuredConfig(amount=1),
])
def test_bad_config_values_are_user_errors(make):
    with pytest.raises(EdgemlError) as e:
        make()
    assert "\n" not in str(e.value)


def test_unknown_ignored_names_list_valid_ones(digits):
    x = (inputs(digits),)
    for run in (lambda: prune_structured(digits.model, x, StructuredConfig(ignore=("features.9",))),
                lambda: prune_unstructured(digits.model, UnstructuredConfig(ignore=("conv1",))),
                lambda: prune_2to4(digits.model, ignore=("fc",))):
        with pytest.raises(EdgemlError, match=r"not a module of the model.*features\.0"):
            run()


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.branch = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(x + self.branch(x))
        return self.head(x.mean((2, 3)))


def test_residual_branches_are_pruned_together():
    """Half of every channel group is dead; removing exactly those channels must not change the outputs."""
    torch.manual_seed(0)
    model = Residual().eval()
    stream, inner = torch.randperm(32)[:16], torch.randperm(32)[:16]
    with torch.no_grad():
        for p in (model.stem.weight, model.stem.bias, model.bn.weight, model.bn.bias,
                  model.branch[2].weight, model.branch[2].bias):
            p[stream] = 0
        model.branch[0].weight[:, stream] = 0
        model.head.weight[:, stream] = 0
        model.branch[0].weight[inner] = 0
        model.branch[0].bias[inner] = 0
        model.branch[2].weight[:, inner] = 0
    x = torch.randn(4, 3, 8, 8)

    result = prune_structured(model, (x,), StructuredConfig(ratio=0.5, round_to=None))
    pruned = result.model
    assert pruned.stem.out_channels == pruned.bn.num_features == pruned.branch[0].in_channels == 16
    assert pruned.branch[2].out_channels == pruned.head.in_features == 16
    assert pruned.branch[0].out_channels == pruned.branch[2].in_channels == 16
    with torch.no_grad():
        np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), atol=1e-5)


def test_output_layers_are_found_by_tracing_not_by_name():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 6, 1), nn.BatchNorm2d(6),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.randn(2, 3, 8, 8)
    result = prune_structured(model, (x,), StructuredConfig(ratio=0.5))
    assert result.extra["output_layers"] == ["2"]
    assert result.model[0].out_channels == 8 and result.model[2].out_channels == 6
    assert result.model(x).shape == (2, 6)


# --- unstructured -------------------------------------------------------------------------------

def weights(model):
    return {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, PRUNABLE)}


def zipped(model):
    return len(zlib.compress(b"".join(t.float().numpy().tobytes() for t in model.state_dict().values())))


@pytest.mark.parametrize("global_pruning", [True, False])
def test_unstructured_reaches_the_asked_sparsity(digits, global_pruning):
    model, x = digits.model, inputs(digits)
    before = snapshot(model)
    result = prune_unstructured(model, UnstructuredConfig(amount=0.6, global_pruning=global_pruning))

    assert_unchanged(model, before)
    assert result.model.state_dict().keys() == before.keys()        # masks made permanent
    pruned = weights(result.model)
    zeros = sum(int((w == 0).sum()) for w in pruned.values())
    assert zeros / sum(w.numel() for w in pruned.values()) == pytest.approx(0.6, abs=0.01)
    if not global_pruning:
        assert all(float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.01) for w in pruned.values())
    assert zipped(result.model) < 0.8 * zipped(model)
    assert result.extra["compressed_bytes_after"] < result.extra["compressed_bytes_before"]
    assert result.model(x).shape == (64, 10)
    assert "does not speed up" in result.notes[0]


def test_unstructured_leaves_ignored_layers_dense(digits):
    result = prune_unstructured(digits.model, UnstructuredConfig(ignore=("features.0",)))
    assert torch.equal(result.model.features[0].weight, digits.model.features[0].weight)
    assert "features.0" not in {r["name"] for r in result.layers}


# --- 2:4 ----------------------------------------------------------------------------------------

def groups_of_4(weight):
    """Rows of 4 consecutive input channels, at each kernel position for a conv."""
    if weight.dim() == 4:
        weight = weight.permute(0, 2, 3, 1)
    return weight.reshape(-1, 4)


def test_2to4_masks_keep_the_2_largest_of_every_4(digits):
    model = digits.model
    before = snapshot(model)
    result = prune_2to4(model)
    assert_unchanged(model, before)

    masked = {r["name"] for r in result.layers if r["masked"]}
    assert masked == {"features.2", "features.5", "classifier.1", "classifier.3"}
    original, pruned = weights(model), weights(result.model)
    for name in masked:
        new, old = groups_of_4(pruned[name]), groups_of_4(original[name]).abs()
        assert bool(((new == 0).sum(1) == 2).all()), name
        kept = new != 0
        smallest_kept = torch.where(kept, old, torch.inf).min(1).values
        largest_dropped = torch.where(kept, -torch.inf, old).max(1).values
        assert bool((smallest_kept >= largest_dropped).all()), name
    assert result.extra["verified"] is True
    assert "TensorRT" in result.notes[0]
    assert result.model(inputs(digits)).shape == (64, 10)


def test_2to4_skips_layers_that_do_not_split_into_groups_of_4(digits):
    skipped = {r["name"]: r["reason"] for r in prune_2to4(digits.model).layers if not r["masked"]}
    assert skipped.keys() == {"features.0"} and "multiple of 4" in skipped["features.0"]

    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    result = prune_2to4(model)
    assert {r["name"]: r["masked"] for r in result.layers} == {"0": False, "2": True}
    assert "in_features (6)" in result.layers[0]["reason"]
    assert torch.equal(result.model[0].weight, model[0].weight)


def test_verify_2to4_flags_a_broken_weight(digits):
    result = prune_2to4(digits.model)
    assert verify_2to4(result.model) == []
    assert verify_2to4(digits.model) == ["features.2.weight", "features.5.weight", "classifier.1.weight",
                                         "classifier.3.weight"]
    with torch.no_grad():
        result.model.classifier[1].weight[3, 4:8] = 1.0
    assert verify_2to4(result.model) == ["classifier.1.weight"]
