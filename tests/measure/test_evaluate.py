import numpy as np
import pytest

from edgeml.errors import DataError
from edgeml.measure.evaluate import compare, predict, quality_metric


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
    assert quality_metric([np.zeros((4, 1))], labels) == "cosine"
    with pytest.raises(DataError, match="labels range 0..5"):
        quality_metric(ref, np.array([0, 5, 1, 1]))
