import time

import numpy as np

from edgeml.measure import memory
from edgeml.measure.latency import MeasureConfig, bootstrap_median_ci, measure_latency


def test_latency_statistics_of_a_known_workload():
    lat = measure_latency(lambda: time.sleep(0.002), MeasureConfig(seconds=0.1, min_runs=20))
    assert lat.runs >= 20 and lat.warmup_runs >= 5
    assert 2.0 <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms
    assert lat.p50_ci95_ms[0] <= lat.p50_ms <= lat.p50_ci95_ms[1]
    assert abs(lat.throughput_per_s - 1000 / lat.mean_ms) < 1e-6


def test_bootstrap_interval_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    small = bootstrap_median_ci(rng.normal(10, 1, 30))
    large = bootstrap_median_ci(rng.normal(10, 1, 3000))
    assert small[0] < 10 < small[1] and large[0] < 10 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3
    assert bootstrap_median_ci(np.arange(100.0), seed=3) == bootstrap_median_ci(np.arange(100.0), seed=3)


def test_memory_probe_sees_a_bigger_model_need_more(tmp_path):
    """Peak memory in a child process grows with the weights the model carries."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def matmul_model(n, path):
        w = numpy_helper.from_array(np.ones((n, n), np.float32), "w")
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)

    peaks = {}
    for n in (64, 2048):                                   # 16 KB vs 16 MB of weights
        matmul_model(n, tmp_path / f"m{n}.onnx")
        spec = {"threads": 1, "artifact": {"backend": "onnxruntime", "precision": "fp32",
                                           "folder": str(tmp_path), "entry": f"m{n}.onnx", "runtime_config": {}}}
        peaks[n] = memory.measure(spec, {"x": np.ones((1, n), np.float32)})
    assert peaks[2048] - peaks[64] > 16e6
