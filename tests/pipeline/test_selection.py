import numpy as np

from edgeml.measure.paired_timing import summarize
from edgeml.pipeline.selection import contenders, select
from edgeml.report.record import Row


def row(name, p50, accuracy, drop, status="ok", precision="fp32"):
    return Row(name, "b", precision, "candidate", status=status, metrics={"accuracy": accuracy},
               quality_drop=drop, latency={"p50_ms": p50}, size_bytes=100)


def test_fastest_within_budget():
    rows = [Row("original", "torch", "fp32", "reference"), row("slow", 2.0, 0.98, 0.0),
            row("fast", 1.0, 0.975, 0.005), row("fastest", 0.5, 0.90, 0.08), row("broken", 0.1, 0, 0, "failed")]
    summary = select(rows, 0.01, "accuracy")
    assert summary["candidate"] == "fast" and summary["within_budget"]
    assert [r.name for r in rows if r.selected] == ["fast"]
    assert [r.within_budget for r in rows[1:4]] == [True, True, False]


def test_budget_missed_keeps_the_most_accurate_and_says_so():
    rows = [row("a", 1.0, 0.90, 0.08), row("b", 2.0, 0.95, 0.03)]
    summary = select(rows, 0.01, "accuracy")
    assert summary["candidate"] == "b" and not summary["within_budget"]
    assert "no candidate kept its accuracy drop within 0.01" in summary["reason"]


def test_nothing_built():
    assert select([row("a", 1.0, 0.9, 0.0, "failed")], 0.01, "accuracy")["candidate"] is None


def on_device(name, predicted_ms, accuracy, drop, status="predicted"):
    return Row(name, "tensorrt", "int8", "candidate", status=status, metrics={"accuracy": accuracy},
               quality_drop=drop, predicted={"ms": predicted_ms})


def test_measured_rows_are_never_ranked_against_predicted_ones():
    rows = [row("cuda-fp16", 2.0, 0.98, 0.0), on_device("trt-int8", 0.1, 0.98, 0.0)]
    summary = select(rows, 0.01, "accuracy")
    assert summary["candidate"] == "cuda-fp16" and summary["basis"] == "measured"


def test_device_only_rows_ranked_by_predicted_latency():
    rows = [on_device("fp16", 0.8, 0.98, 0.0), on_device("int8", 0.3, 0.97, 0.005),
            on_device("int8-bad", 0.2, 0.80, 0.18), on_device("unknown", None, 0.98, 0.0, "needs device")]
    summary = select(rows, 0.01, "accuracy")
    assert summary["candidate"] == "int8" and summary["basis"] == "predicted" and summary["within_budget"]
    assert "predicted" in summary["reason"]


# Close contenders, timed again in alternating rounds (edgeml.measure.paired_timing) and settled.

def timed(p50, spread=0.01, rounds=5, runs=200, seed=0):
    """Synthetic per-round call times around `p50` ms, as paired_timing.interleave returns them."""
    rng = np.random.default_rng(seed)
    return summarize([p50 * (1 + spread * rng.standard_normal(runs)) for _ in range(rounds)])


def test_a_row_counts_as_faster_only_when_its_speedup_is_real():
    rows = [row("fp32", 1.00, 0.99, 0.0), row("int8", 0.70, 0.985, 0.005, precision="int8")]
    summary = select(rows, 0.01, "accuracy", paired={"fp32": timed(1.0), "int8": timed(0.7, seed=1)})
    assert summary["candidate"] == "int8"
    assert summary["paired"]["tied"] == ["int8"] and "faster than fp32" in summary["reason"]


def test_a_tie_goes_to_the_higher_quality_then_the_simpler_precision():
    rows = [row("fp32", 1.00, 0.99, 0.0), row("int8", 0.98, 0.985, 0.005, precision="int8")]
    summary = select(rows, 0.01, "accuracy", paired={"fp32": timed(1.0, 0.05), "int8": timed(1.0, 0.05, seed=1)})
    assert summary["candidate"] == "fp32" and sorted(summary["paired"]["tied"]) == ["fp32", "int8"]
    assert "tied within noise" in summary["reason"] and "95% CI" in summary["reason"]
    for r in rows:
        r.selected = False
    summary = select(rows, 0.01, "accuracy", paired={"fp32": timed(1.0, 0.05), "int8": timed(0.99, 0.05, seed=1)})
    assert summary["candidate"] == "fp32" and summary["paired"]["tied"] == ["fp32", "int8"]
    assert "tied (a speed-up not above 1.02x does not count) (speed-up of int8 1.01x" in summary["reason"]
    same = [row("bf16", 1.0, 0.99, 0.0, precision="bf16"), row("fp16", 1.0, 0.99, 0.0, precision="fp16"),
            row("fp32", 1.0, 0.99, 0.0)]
    summary = select(same, 0.01, "accuracy", paired={r.name: timed(1.0, 0.05, seed=i) for i, r in enumerate(same)})
    assert summary["candidate"] == "fp32"


def test_noisy_rounds_do_not_hand_the_pick_to_a_clearly_slower_row():
    # a 10% median gain whose CI the noise of a shared machine widens below FASTER: not a tie
    rows = [row("bf16", 1.0, 0.99, 0.0, precision="bf16"), row("int8", 0.9, 0.99, 0.0, precision="int8")]
    paired = {"bf16": timed(1.0, 0.5, runs=20), "int8": timed(0.9, 0.5, runs=20, seed=1)}
    assert select(rows, 0.01, "accuracy", paired=paired)["candidate"] == "int8"


def test_a_quality_difference_far_below_the_budget_does_not_settle_a_tie():
    # the same INT8 model with its float remainder in fp32 or in bf16: a cosine apart in the fifth decimal
    rows = [row("int8", 1.0, 0.99512, 0.0049, precision="int8"), row("int8-bf16", 1.0, 0.99510, 0.0049,
                                                                       precision="int8+bf16")]
    summary = select(rows, 0.01, "accuracy", paired={"int8": timed(1.0, 0.05), "int8-bf16": timed(0.99, 0.05, seed=1)})
    assert summary["candidate"] == "int8-bf16" and sorted(summary["paired"]["tied"]) == ["int8", "int8-bf16"]
    for r in rows:
        r.selected = False
    rows[0].metrics["accuracy"] = 0.99612               # a tenth of the budget better: that settles it
    assert select(rows, 0.01, "accuracy", paired={"int8": timed(1.0, 0.05),
                                                  "int8-bf16": timed(0.99, 0.05, seed=1)})["candidate"] == "int8"


def test_the_original_onnx_model_is_shipped_when_nothing_beats_it():
    original = Row("original", "onnxruntime", "fp32", "reference", metrics={"accuracy": 0.99}, quality_drop=0.0,
                   latency={"p50_ms": 1.0}, size_bytes=100)
    rows = [original, row("openvino-fp32", 0.97, 0.99, 0.0)]
    summary = select(rows, 0.01, "accuracy", original_eligible=True,
                     paired={"original": timed(1.0, 0.05), "openvino-fp32": timed(0.98, 0.05, seed=1)})
    assert summary["candidate"] == "original" and original.selected
    assert summary["reason"].startswith("no candidate was faster than your model")
    assert select([original], 0.01, "accuracy")["candidate"] is None       # a PyTorch model's original is not


def test_contenders_are_the_rows_close_to_the_fastest_and_keep_the_original():
    original = Row("original", "onnxruntime", "fp32", "reference", metrics={"accuracy": 0.99}, quality_drop=0.0,
                   latency={"p50_ms": 1.2})
    rows = [original, row("a", 1.0, 0.99, 0.0), row("b", 1.1, 0.99, 0.0), row("c", 1.15, 0.99, 0.0),
            row("d", 1.18, 0.99, 0.0), row("slow", 2.5, 0.99, 0.0), row("over", 0.5, 0.9, 0.09)]
    assert [r.name for r in contenders(rows, 0.01)] == ["a", "b", "c", "d"]
    assert [r.name for r in contenders(rows, 0.01, original_eligible=True)] == ["a", "b", "c", "original"]
    assert len(contenders([row("a", 1.0, 0.99, 0.0), row("slow", 2.5, 0.99, 0.0)], 0.01)) == 1
