"""End to end: `edgeml quantize` within an accuracy budget, `edgeml prune`, `edgeml distill`, and
`edgeml optimize` chaining pruning, distillation and quantization from a recipe."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
import yaml
from heavy_tailed import heavy_tailed_model

QUICK = ("--measure-seconds", "0.05", "--threads", "1")


@pytest.fixture(scope="module")
def heavy_tailed(digits, tmp_path_factory):
    """The digits CNN with its two most active hidden units scaled up 1000x and their consumers
    scaled down to match.

    In float it computes the same function; in INT8 the huge range of that activation crushes
    every other unit of the tensor to zero, so plain per-tensor activation quantization fails.
    """
    model = heavy_tailed_model(digits)
    x = torch.from_numpy(digits.test.inputs["input"])
    path = tmp_path_factory.mktemp("heavy") / "heavy.pt2"
    program = torch.export.export(model, (x[:2],), dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path))
    return path


def rows(out):
    report = json.loads((out / "report.json").read_text())
    return report, {r["name"]: r for r in report["rows"]}


def test_quantize_reverts_the_range_that_carries_the_error(edgeml_cli, heavy_tailed, files, tmp_path):
    out = tmp_path / "q"
    result = edgeml_cli("quantize", heavy_tailed, "--quantizer", "ort", "--max-accuracy-drop", "0.01",
                        "--calib-data", files["calib.npz"], "--eval-data", files["eval.npz"], "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, by_name = rows(out)
    assert [n for n, r in by_name.items() if r["status"] != "skipped"] == \
        ["original", "onnxruntime-int8", "onnxruntime-int8-mixed"]
    plain, mixed = by_name["onnxruntime-int8"], by_name["onnxruntime-int8-mixed"]
    assert plain["quality_drop"] > 0.05                     # plain INT8 breaks the budget badly
    assert mixed["quality_drop"] <= 0.01 and mixed["selected"] and report["selection"]["within_budget"]
    assert mixed["precision"] == "int8+fp32"

    tuning = report["tuning"]["onnxruntime-int8"]
    reverted = tuning["best"]["reverted"]
    ranked = sorted(tuning["sensitivity"], key=lambda s: -s["gain"])
    # the heavy-tailed activation's range (the hidden Gemm's output; the Relu after it folded into its Q/DQ) carries
    # the error: reverting it alone meets the budget, and the rest stays INT8
    assert tuning["met"] and reverted == [ranked[0]["quantizer"]] and tuning["best"]["excluded"] == []
    assert ranked[0]["what"].startswith("output of Gemm") and ranked[0]["gain"] > 0.5 > ranked[1]["gain"]
    assert tuning["ranking"]["ranked"] == tuning["ranking"]["quantizers"] == len(ranked)
    assert {"input", "weight"} <= {s["what"].split()[0] for s in ranked}          # inputs and weights as well
    assert any(t["pareto"] for t in tuning["trials"])
    assert mixed["method"].endswith(f"1 quantizer(s) reverted to fp32 to meet the accuracy budget: {reverted[0]}")

    graph = onnx.load(str(out / "bundle" / "model.onnx")).graph
    assert reverted[0] not in {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert "Relu" in {n.op_type for n in graph.node}                  # put back where the range clamped for it
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[1] in dequantized for n in convs)    # still INT8

    md = (out / "report.md").read_text()
    assert "## Accuracy budget: onnxruntime-int8" in md and "output error it removes" in md
    assert "calibration data: ranges, sensitivity and the budget check" in md
    count = tuning["ranking"]["quantizers"]
    assert f"quantizers: {count} in the fully quantized build, {count} ranked by the output error" in md


def test_prune_then_distill_commands(edgeml_cli, files, tmp_path):
    pruned = tmp_path / "pruned"
    result = edgeml_cli("prune", "--example", "digits", "--ratio", "0.5", "-o", pruned)
    assert result.exit_code == 0, result.stderr
    record = json.loads((pruned / "report.json").read_text())
    assert record["prune"]["macs_ratio"] >= 1.8 and record["prune"]["params_ratio"] >= 1.8
    models = record["evaluation"]["models"]
    assert models["original"]["accuracy"] > 0.95 and models["pruned"]["accuracy"] < models["original"]["accuracy"]
    assert (pruned / "model.pt2").is_file() and "MACs" in (pruned / "report.md").read_text()

    distilled = tmp_path / "distilled"
    result = edgeml_cli("distill", "--example", "digits", "--student", pruned / "model.pt2", "--epochs", "8",
                        "-o", distilled)
    assert result.exit_code == 0, result.stderr
    record = json.loads((distilled / "report.json").read_text())
    models = record["evaluation"]["models"]
    before, after = models["student as given"]["accuracy"], models["distilled"]["accuracy"]
    assert after >= before + 0.1 and after >= models["original"]["accuracy"] - 0.03, models
    assert record["distill"]["curve"] and record["distill"]["best_epoch"] >= 1

    # The pruned, distilled program is a model like any other: every CPU backend builds and runs it.
    out = tmp_path / "optimized"
    result = edgeml_cli("optimize", distilled / "model.pt2", "--calib-data", files["calib.npz"],
                        "--eval-data", files["eval.npz"], "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    _, by_name = rows(out)
    built = {n: r for n, r in by_name.items() if r["role"] == "candidate" and r["status"] != "skipped"}
    assert {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"} <= set(built)
    assert all(r["status"] == "ok" and r["metrics"]["accuracy"] > 0.9 for r in built.values()), built


def test_optimize_chains_prune_distill_and_quantize_from_a_recipe(edgeml_cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prune: {ratio: 0.5, importance: l2}\ndistill: {epochs: 4, patience: 2}\n"
                      "max_accuracy_drop: 0.2\nprecision: int8\n")
    out = tmp_path / "o"
    result = edgeml_cli("optimize", "--example", "digits", "--recipe", recipe, "--max-accuracy-drop", "0.03",
                        "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, by_name = rows(out)
    assert list(by_name)[:3] == ["original", "pruned-50", "pruned-50+distilled"]
    assert by_name["pruned-50"]["role"] == by_name["pruned-50+distilled"]["role"] == "stage"
    pruned, distilled = by_name["pruned-50"], by_name["pruned-50+distilled"]
    assert distilled["metrics"]["accuracy"] > pruned["metrics"]["accuracy"] + 0.1
    candidates = [r for r in by_name.values() if r["role"] == "candidate" and r["status"] != "skipped"]
    assert candidates and all(r["status"] == "ok" for r in candidates), [r["reason"] for r in candidates]
    assert report["compression"]["prune"]["macs_ratio"] >= 1.8
    assert report["compression"]["distill"]["config"]["epochs"] == 4
    assert report["selection"]["max_accuracy_drop"] == 0.03                # the flag overrides the file
    effective = yaml.safe_load((out / "recipe.yaml").read_text())
    assert effective["max_accuracy_drop"] == 0.03 and effective["prune"]["importance"] == "l2"
    assert effective == report["config"]["recipe"] == json.loads(
        (out / "bundle" / "manifest.json").read_text())["lineage"]["recipe"]
    md = (out / "report.md").read_text()
    assert "## Pruning" in md and "## Distillation" in md and "PyTorch stage" in md


def test_local_errors_rank_the_heavy_tailed_layers_first(heavy_tailed, digits, tmp_path):
    """The one-pass ranking large models use finds the layers the per-layer builds find."""
    from edgeml.compress.quantize import onnxruntime_backend as ort_quant
    from edgeml.inputs.export import export_onnx
    from edgeml.inputs.models import load_model

    onnx_path = tmp_path / "heavy.onnx"
    export_onnx(load_model(str(heavy_tailed), None, ()), onnx_path, {"input": digits.validation.inputs["input"][:2]})
    ort_quant.run(onnx_path, tmp_path / "int8.onnx", digits.validation)
    layers = ort_quant.compute_layers(onnx_path)
    errors = ort_quant.local_errors(tmp_path / "int8.onnx", digits.validation, layers)
    assert set(errors) == {name for name, _ in layers}
    ranked = sorted(errors, key=lambda name: -errors[name])
    assert {dict(layers)[name] for name in ranked[:2]} == {"Gemm"}, errors
