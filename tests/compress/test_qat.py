"""Quantization-aware distillation on the digits CNN made hard to quantize: a few channels carry a wide range
that per-tensor INT8 activations cannot hold; fine-tuning with fake INT8 against the float model (label-free)
recovers the accuracy plain quantize_static loses, measured with ONNX Runtime on the held-out test split."""

import copy
import math
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeml.compress.distill import DistillConfig
from edgeml.compress.quantize import Int8Config
from edgeml.compress.quantize import onnxruntime_backend as ort_backend
from edgeml.compress.quantize.qat import QatConfig, quantization_aware, run
from edgeml.errors import EdgemlError
from edgeml.inputs.export import export_onnx
from edgeml.inputs.models import load_model

WIDE = 300.0          # the factor the outlier channels are scaled by
OUTLIERS = 8          # of the first conv's 32 channels


def predictions(path, dataset) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, dataset.feeds(0, len(dataset)))[0].argmax(1)


@pytest.fixture(scope="module")
def hard(digits):
    """The digits CNN with OUTLIERS channels of its first conv scaled up by WIDE and the second conv's weights
    on them scaled down by WIDE: the same function (ReLU commutes with a positive scale), but the second conv's
    input range is WIDE times larger, which per-tensor INT8 activations crush."""
    model = copy.deepcopy(digits.model)
    with torch.no_grad():
        first, second = model.features[0], model.features[2]
        first.weight[:OUTLIERS] *= WIDE
        first.bias[:OUTLIERS] *= WIDE
        second.weight[:, :OUTLIERS] /= WIDE
    return load_model(model, None, ["input:?x1x8x8"])


@pytest.fixture(scope="module")
def plain(hard, digits, tmp_path_factory):
    """The hard model through plain quantize_static (QDQ, per-channel, minmax), as the INT8 candidate builds it."""
    work = tmp_path_factory.mktemp("plain")
    exported = export_onnx(hard, work / "float.onnx", {"input": digits.validation.inputs["input"][:2]})
    quantized = ort_backend.run(exported.path, work / "int8.onnx", digits.validation)
    return exported.path, quantized


def test_qat_recovers_the_accuracy_plain_int8_loses(hard, plain, digits, tmp_path):
    test = digits.test
    float_right = predictions(plain[0], test) == test.labels
    plain_right = predictions(plain[1], test) == test.labels
    lost = float_right.mean() - plain_right.mean()
    assert lost >= 0.03, f"the model must be hard to quantize: plain INT8 lost only {lost:.3f}"

    seen = []
    config = QatConfig(distill=replace(QatConfig().distill, epochs=6))     # of 20: enough to recover it all
    result = quantization_aware(hard, replace(digits.train, labels=None), digits.validation, tmp_path / "qat.onnx",
                                config, on_epoch=lambda epoch, epochs, record: seen.append((epoch, epochs, record)))
    assert result.training.label_free and result.training.metric == "agreement"
    assert result.layers == 5 and [e for e, _, _ in seen] == list(range(1, len(seen) + 1))
    qat_right = predictions(result.model, test) == test.labels
    ops = {n.op_type for n in onnx.load(str(result.model)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    # Recovers at least half of what plain INT8 lost, and the samples it fixes outnumber those it breaks by
    # more than chance would give (sign test, about 3 standard deviations).
    assert qat_right.mean() >= plain_right.mean() + lost / 2, (qat_right.mean(), plain_right.mean(), lost)
    fixed, broken = int(np.sum(qat_right & ~plain_right)), int(np.sum(~qat_right & plain_right))
    assert fixed - broken >= 3 * math.sqrt(fixed + broken), (fixed, broken)


def test_qat_is_deterministic_bounded_in_time_and_leaves_the_source_alone(hard, digits, tmp_path):
    before = {k: v.clone() for k, v in hard.module.state_dict().items()}
    config = QatConfig(distill=DistillConfig(epochs=5, seed=3))
    first = quantization_aware(hard, digits.train, digits.validation, tmp_path / "a" / "qat.onnx", config,
                               seconds=1e-3)
    again = run(hard, digits.train, digits.validation, tmp_path / "b" / "qat.onnx", config, seconds=1e-3)
    assert first.training.stopped == "time budget" and len(first.training.curve) == 1
    assert first.model.read_bytes() == again.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["qat.onnx"]      # no scratch files left
    after = hard.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(k.startswith("parametrizations") for k in after) and not hard.module.features[2]._forward_pre_hooks


@pytest.mark.parametrize("avoid_saturation, levels", [(False, 127), (True, 64)])
def test_qat_weights_are_the_ones_onnx_runtime_runs(hard, digits, tmp_path, avoid_saturation, levels):
    """Training ends with every weight on the INT8 grid quantize_static uses (7 bits on CPUs whose int8 kernels
    can saturate), so the QDQ model runs exactly the trained weights."""
    config = QatConfig(distill=DistillConfig(epochs=1), int8=Int8Config(avoid_saturation=avoid_saturation))
    result = quantization_aware(hard, digits.train, digits.validation, tmp_path / "qat.onnx", config)
    trained = {tuple(m.weight.shape): m.weight.numpy()
               for m in result.tuned.modules() if isinstance(m, torch.nn.Conv2d)}
    graph = onnx.load(str(result.model)).graph
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    runs = {}
    for node in graph.node:
        q = values.get(node.input[0])
        if node.op_type == "DequantizeLinear" and q is not None and q.dtype == np.int8 and q.ndim == 4:
            assert np.abs(q).max() <= levels
            runs[q.shape] = q * values[node.input[1]].reshape(-1, 1, 1, 1)
    assert runs.keys() == trained.keys()
    for shape, weight in trained.items():
        np.testing.assert_allclose(runs[shape], weight, rtol=1e-5, atol=1e-7 * np.abs(weight).max())


def test_qat_needs_a_torch_module_with_layers_to_quantize(hard, digits, tmp_path):
    with pytest.raises(EdgemlError, match="needs a torch.nn.Module, not a model of kind onnx"):
        run(replace(hard, kind="onnx", module=None), digits.train, digits.validation, tmp_path / "q.onnx")
    layerless = load_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.ReLU()), None, ["input:?x1x8x8"])
    with pytest.raises(EdgemlError, match="no Conv or Linear layer"):
        run(layerless, digits.train, digits.validation, tmp_path / "q.onnx")
