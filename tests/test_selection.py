from edgeml.record import Row
from edgeml.selection import select


def row(name, p50, accuracy, drop, status="ok"):
    return Row(name, "b", "fp32", "candidate", status=status, metrics={"accuracy": accuracy},
               quality_drop=drop, latency={"p50_ms": p50})


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
