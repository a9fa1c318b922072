import numpy as np
import pytest

from edgeml.errors import DataError
from edgeml.measure.evaluate import compare, predict, quality_metric, sample_scores


class Doubler:
    def __init__(self):
        self.batches = []

    def run(self, feeds):
        self.batches.append(len(feeds["x"]))
        return [feeds["x"] * 2]


def test_predict_batches_and_pads_fixed_batches(digits):
    from edgeml.inputs.data import Dataset

    ds = Dataset({"x": np.arange(10, dtype=np.float32)[:, None]}, None, "ten")
    runner = Doubler()
    assert predict(runner, ds, 4)[0].ravel().tolist() == [2 * i for i in range(10)]
    assert runner.batches == [4, 4, 2]
    runner = Doubler()
    assert predict(runner, ds, 4, fixed_batch=True)[0].shape == (10, 1)
    assert runner.batches == [4, 4, 4]


def test_compare_metrics():
    ref = [np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])]
    out = [np.array([[2.0, 1.0], [0.0, 3.0], [0.0, 1.0], [0.0, 1.0]])]   # third sample flips
    labels = np.array([0, 1, 0, 0])
    m = compare(out, ref, labels)
    assert m["agreement"] == 0.75 and m["accuracy"] == 0.5 and m["max_abs_error"] == 1.0
    assert m["cosine"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert quality_metric(ref, labels) == "accuracy"
    assert quality_metric(ref, None) == "agreement"
    assert quality_metric([np.zeros((4, 1))], labels) == "r2"               # one value per sample
    assert quality_metric([np.zeros((4, 8, 2))], labels) == "cosine"
    with pytest.raises(DataError, match="labels range 0..5"):
        quality_metric(ref, np.array([0, 5, 1, 1]))


def _transpose_model(path, input_shape, perm, reduce=False):
    """A real ONNX model: x transposed by `perm` (or summed over its first axis)."""
    import onnx
    from onnx import TensorProto, helper

    if reduce:
        node = helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)    # all axes: a scalar
    else:
        node = helper.make_node("Transpose", ["x"], ["y"], perm=perm)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_outputs_keep_every_sample_wherever_the_batch_axis_is(tmp_path):
    """Real models from other projects put the batch elsewhere: a CRNN's [time, batch, classes], an output with
    no batch axis at all; every sample's whole output is kept, samples first."""
    import onnx

    from edgeml.inputs.data import Dataset
    from edgeml.inputs.models import onnx_input_specs
    from edgeml.pipeline.exported import eval_batch
    from edgeml.runtimes.onnxruntime import OrtRunner

    x = np.random.default_rng(0).standard_normal((10, 3, 6)).astype(np.float32)
    data = Dataset({"x": x}, None, "ten")

    # fixed batch 1, time first: [1, 3, W] -> [W, 1, 3]
    fixed = _transpose_model(tmp_path / "fixed.onnx", [1, 3, "W"], [2, 0, 1])
    batch, is_fixed = eval_batch(onnx_input_specs(onnx.load(str(fixed))))
    assert (batch, is_fixed) == (1, True)
    got = predict(OrtRunner(fixed, 1), data, batch, is_fixed)[0]
    assert got.shape == (10, 6, 1, 3)
    np.testing.assert_array_equal(got, x.transpose(0, 2, 1)[:, :, None, :])

    # dynamic batch on axis 1: [N, 3, 6] -> [6, N, 3]
    dynamic = _transpose_model(tmp_path / "dynamic.onnx", ["N", 3, 6], [2, 0, 1])
    for batch in (4, 3):              # batches of 3: the last call, of one sample, is read like the others
        got = predict(OrtRunner(dynamic, 1), data, batch)[0]
        np.testing.assert_array_equal(got, x.transpose(0, 2, 1))

    # no batch axis in the output: the batch runs again one sample a call
    summed = _transpose_model(tmp_path / "summed.onnx", ["N", 3, 6], None, reduce=True)
    got = predict(OrtRunner(summed, 1), data, 4)[0]
    np.testing.assert_allclose(got, x.sum(axis=(1, 2)), rtol=1e-5)


def test_a_dimension_of_minus_one_is_dynamic(tmp_path):
    """PaddlePaddle writes -1 for "any" size: read as a dynamic batch, not a fixed batch of -1."""
    import onnx

    from edgeml.inputs.models import onnx_input_specs
    from edgeml.pipeline.exported import eval_batch

    specs = onnx_input_specs(onnx.load(str(_transpose_model(tmp_path / "m.onnx", [-1, 3, 48, 192], [0, 1, 2, 3]))))
    assert specs[0].shape == (None, 3, 48, 192)
    assert eval_batch(specs)[1] is False


def test_few_values_per_sample_are_judged_by_r2_not_cosine():
    """A speech probability a tenth off for every sample keeps a cosine of 1 (two positive numbers); R² sees it."""
    rng = np.random.default_rng(0)
    reference = [rng.uniform(0.05, 0.95, (200, 1)).astype(np.float32)]
    off = [np.clip(reference[0] + rng.choice([-0.1, 0.1], (200, 1)), 0, 1).astype(np.float32)]
    assert quality_metric(reference, None) == "r2"
    assert quality_metric([rng.standard_normal((10, 4, 16))], None) == "cosine"
    metrics = compare(off, reference, None)
    assert metrics["cosine"] == pytest.approx(1.0)
    assert metrics["r2"] < 0.9
    assert compare(reference, reference, None)["r2"] == pytest.approx(1.0)
    assert np.mean(sample_scores(off, reference, None, "r2")) == pytest.approx(metrics["r2"])
