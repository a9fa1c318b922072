"""Timing that fits the model: a contest ends once its verdicts are settled, stays within its seconds on a slow
model, and a slow model's latency is timed in a few calls, not a fixed 50."""

import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeml.measure.latency import MeasureConfig, measure_latency
from edgeml.measure.paired_timing import MIN_ROUNDS, contest, faster, round_speedup, settled
from edgeml.runtimes.onnxruntime import OrtRunner


def slow_model(path, size=384, depth=36):
    """A chain of `depth` square MatMuls on a (size, size) input: about 0.1 s a call on one thread."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal((size, size)) / size ** 0.5).astype(np.float32), f"w{i}")
               for i in range(depth)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}" if i < depth - 1 else "y"])
             for i in range(depth)]
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return {"x": rng.standard_normal((size, size)).astype(np.float32)}


def test_a_contest_ends_once_every_verdict_is_settled():
    timed = contest({"quick": lambda: time.sleep(0.001), "slow": lambda: time.sleep(0.006)}, seconds=30)
    assert [len(timed[name]["round_p50_ms"]) for name in timed] == [MIN_ROUNDS, MIN_ROUNDS]
    s = round_speedup(timed["slow"], timed["quick"])
    assert settled(s) and faster(s) == "ci" and s["ratio"] > 2


def test_a_contest_of_a_slow_model_stays_within_its_seconds(tmp_path):
    sample = slow_model(tmp_path / "slow.onnx")
    a, b = OrtRunner(tmp_path / "slow.onnx", 1), OrtRunner(tmp_path / "slow.onnx", 1)
    call = measure_latency(lambda: a.run(sample), MeasureConfig(seconds=0.2, min_runs=3)).p50_ms / 1e3
    seconds = 80 * call
    # the fixed schedule before it (20 calls a round, 9 rounds) would have taken 360 calls
    started = time.perf_counter()
    timed = contest({"a": lambda: a.run(sample), "b": lambda: b.run(sample)}, seconds)
    elapsed = time.perf_counter() - started
    rounds = len(timed["a"]["round_p50_ms"])
    assert rounds >= MIN_ROUNDS and max(timed["a"]["runs"] + timed["b"]["runs"]) <= 8      # not 20 a round
    # a round is a ninth of the seconds: no round starts that the last one says would not fit, but for its jitter
    assert elapsed <= seconds * 1.25, (elapsed, seconds, call, timed["a"]["runs"])


def test_a_slow_call_is_timed_a_few_times_not_min_runs():
    config = MeasureConfig(seconds=0.1, min_runs=50, warmup_seconds=0.05)
    started = time.perf_counter()
    latency = measure_latency(lambda: time.sleep(0.15), config)
    # 50 calls would take 7.5 s; past `longest` x seconds (0.5 s), `fewest_runs` are enough
    assert latency.runs == config.fewest_runs and latency.warmup_runs == 1
    assert time.perf_counter() - started < 2.5
    quick = measure_latency(lambda: None, config)
    assert quick.runs >= 50 and quick.warmup_runs >= config.min_warmup_runs      # a fast call keeps min_runs
