"""End to end: `edgeml optimize` on real models trained in the test, one per MODEL kind."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeml.hashing import sha256_file
from edgeml.measure import cpu_features

QUICK = ("--measure-seconds", "0.05", "--threads", "1")
# The CPU target's candidates that suit a CNN, in the target's order; the MatMul-only ones skip it.
# The bf16-hint candidates follow this CPU's BF16 instructions as edgeml sees them ($EDGEML_CPU_FEATURES overrides).
BF16_HERE = cpu_features.has_bf16()
BF16_HINT = ["openvino-bf16", "openvino-int8-bf16"]
BUILT_ON_CNN = ["original", "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-fp16", "openvino-fp32",
                "openvino-int8"] + (BF16_HINT if BF16_HERE else [])
SKIPPED_ON_CNN = {"onnxruntime-int8-dynamic", "onnxruntime-int4-weights", "openvino-int8-weights",
                  "openvino-int4-weights"}


def check_run(out, *, kind, exporter=None, labelled=True):
    """What every successful run must hold: a complete report, a verifiable bundle."""
    report = json.loads((out / "report.json").read_text())
    assert report["source"]["kind"] == kind
    every = {r["name"]: r for r in report["rows"]}
    skipped = {n for n, r in every.items() if r["status"] == "skipped"}
    as_given = {"onnxruntime-fp32"} if kind == "onnx" else set()     # an ONNX input: the original row is it
    assert skipped == SKIPPED_ON_CNN | as_given | (set() if BF16_HERE else set(BF16_HINT))
    assert all("transformer" in every[n]["reason"] for n in SKIPPED_ON_CNN)
    if not BF16_HERE:
        assert all(every[n]["reason"] == cpu_features.missing_bf16() for n in BF16_HINT)
    # When INT8 misses the budget (random data can do that) the search adds a -mixed row.
    rows = {n: r for n, r in every.items() if n not in skipped and not n.endswith("-mixed")}
    assert list(rows) == [n for n in BUILT_ON_CNN if n not in as_given]
    assert all(r["status"] == "ok" for r in rows.values()), [r["reason"] for r in rows.values()]
    metric = report["data"]["quality_metric"]
    assert metric == ("accuracy" if labelled else "agreement")
    for r in rows.values():
        lat = r["latency"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert lat["p50_ci95_ms"][0] <= lat["p50_ms"] <= lat["p50_ci95_ms"][1]
        assert r["size_bytes"] > 0 and r["peak_memory_bytes"] > 0
    if labelled:
        assert rows["original"]["metrics"]["accuracy"] > 0.95       # the CNN really learned digits
    # FP32 conversions are exact up to float error; INT8 calibrated on real data stays close.
    for name in sorted({"onnxruntime-fp32", "openvino-fp32"} - as_given):
        assert rows[name]["metrics"]["max_abs_error"] < 1e-3 and rows[name]["metrics"]["cosine"] > 0.99999
    for name in list(rows)[1:]:                  # FP16, BF16 and INT8 stay close to the original
        assert rows[name]["metrics"]["cosine"] > 0.99, name
    if labelled:
        assert rows["onnxruntime-int8"]["metrics"]["agreement"] > 0.97
    assert rows["onnxruntime-int8"]["size_bytes"] < rows["onnxruntime-fp32" if not as_given else "original"][
        "size_bytes"] / 2

    chosen = [r for r in every.values() if r["selected"]]
    assert len(chosen) == 1 and chosen[0]["role"] in (("candidate", "reference") if as_given else ("candidate",))
    # The fastest within the budget, or a row tied with it when the close ones were timed again.
    within = [r for r in every.values() if r["within_budget"] or (as_given and r["role"] == "reference")]
    paired = report["selection"]["paired"]
    if paired is None:
        assert chosen[0]["latency"]["p50_ms"] == min(r["latency"]["p50_ms"] for r in within)
    else:
        assert chosen[0]["name"] in paired["tied"] and paired["fastest"] in paired["tied"]
        assert min(paired["rows"][n]["p50_ms"] for n in paired["rows"]) == paired["rows"][paired["fastest"]]["p50_ms"]
    if exporter:
        assert report["export"]["exporter"] == exporter
        assert report["export"]["parity"]["outputs"][0]["max_abs_error"] < 1e-3

    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["candidate"] == chosen[0]["name"]
    for f in manifest["files"]:
        assert sha256_file(out / "bundle" / f["path"]) == f["sha256"]
        assert (out / "bundle" / f["path"]).stat().st_size == f["size"]
    assert manifest["lineage"]["source"]["sha256"] == report["source"]["sha256"]
    md = (out / "report.md").read_text()
    assert (f"| candidate | backend | precision | {metric} | drop | p50 ms (measured here) | p90 ms | size MB | "
            "status |") in md
    assert f"**{chosen[0]['name']}** ✓" in md
    assert not (out / "work").exists()
    return report, manifest


def test_example_digits(edgeml_cli, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", "--example", "digits", "--target", "cpu", "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, manifest = check_run(out, kind="factory", exporter="dynamo")
    assert "calibration = validation split" in " ".join(report["source"]["notes"])
    assert report["data"]["calibration"]["samples"] == 359 and report["data"]["evaluation"]["samples"] == 360
    assert manifest["preprocessing"]["scale"] == 1 / 16
    assert "| candidate | backend |" in result.stdout        # the report is printed
    assert "✓ Export to ONNX" in result.stderr                # progress goes to stderr


def test_onnx_file(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", files["digits.onnx"], "--calib-data", files["calib.npz"],
                        "--eval-data", files["eval.npz"], "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, manifest = check_run(out, kind="onnx")
    assert report["export"] is None
    assert report["rows"][0]["backend"] == "onnxruntime"
    assert [o["name"] for o in manifest["outputs"]] == ["logits"]
    # The bundled model runs on its own in ONNX Runtime (or OpenVINO) and still classifies digits.
    if manifest["backend"]["name"] == "onnxruntime":
        session = ort.InferenceSession(str(out / "bundle" / manifest["entry"]))
        x = np.load(files["eval.npz"])
        logits = session.run(None, {"input": x["input"]})[0]
        assert np.mean(logits.argmax(1) == x["labels"]) > 0.95


def test_exported_program(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", files["digits.pt2"], "--calib-data", files["calib.npz"],
                        "--eval-data", files["eval.npz"], "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    check_run(out, kind="exported_program", exporter="dynamo")


def test_torchscript_needs_and_takes_input_shape(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    args = ("optimize", files["digits.ts"], "--calib-data", files["calib.npz"],
            "--eval-data", files["eval.npz"], "-o", out, *QUICK)
    result = edgeml_cli(*args)
    assert result.exit_code == 2 and "--input-shape" in result.stderr and not out.exists()
    result = edgeml_cli(*args, "--input-shape", "input:1x1x8x8")
    assert result.exit_code == 0, result.stderr
    check_run(out, kind="torchscript", exporter="legacy")


def test_factory_with_weights_and_split(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", "edgeml.examples:DigitsCNN", "--weights", files["weights.pt"],
                        "--input-shape", "1x1x8x8", "--data", files["eval.npz"], "--split", "0.4",
                        "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, _ = check_run(out, kind="factory", exporter="dynamo")
    calib, evaluation = report["data"]["calibration"], report["data"]["evaluation"]
    assert calib["samples"] + evaluation["samples"] == 360
    assert abs(calib["samples"] - 0.4 * 360) <= 5           # per-class rounding of a stratified split
    assert calib["sha256"] != evaluation["sha256"]


def test_no_data_still_runs_and_says_so(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", files["digits.onnx"], "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, _ = check_run(out, kind="onnx", labelled=False)
    assert report["data"]["calibration"]["synthetic"] and report["data"]["evaluation"]["synthetic"]
    assert "no calibration data" in result.stderr and "no evaluation data" in result.stderr
    md = (out / "report.md").read_text()
    assert "calibration used RANDOM inputs" in md and "evaluation used RANDOM inputs" in md


def test_unavailable_backend_is_reported_not_dropped(files, tmp_path):
    """With OpenVINO not importable, its candidates appear as unavailable, with the fix."""
    out = tmp_path / "out"
    code = ("import sys; sys.modules['openvino'] = None; sys.modules['nncf'] = None\n"
            "from edgeml.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "optimize", str(files["digits.onnx"]),
                           "--calib-data", str(files["calib.npz"]), "--eval-data", str(files["eval.npz"]),
                           "-o", str(out), *QUICK], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    for name in ("openvino-fp32", "openvino-int8"):
        assert rows[name]["status"] == "unavailable"
        assert "pip install 'edgeml[cpu]'" in rows[name]["reason"]
    assert rows["onnxruntime-int8"]["status"] == "ok"
    assert "unavailable: openvino not installed" in (out / "report.md").read_text()


def test_installed_entry_point(tmp_path):
    edgeml = Path(sys.executable).parent / "edgeml"
    proc = subprocess.run([edgeml, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "edgeml, version" in proc.stdout
    proc = subprocess.run([edgeml, "optimize", tmp_path / "missing.onnx", "-o", tmp_path / "out"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == f"error: model file not found: {tmp_path / 'missing.onnx'}\n"


def test_targets_lists_cpu_candidates(edgeml_cli):
    result = edgeml_cli("targets")
    assert result.exit_code == 0
    for name in ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"):
        assert name in result.stdout
    assert "measured here" in result.stdout
    for target in ("mobile", "jetson", "gpu"):
        assert f"{target}:" in result.stdout
    if importlib.util.find_spec("tensorrt") is None:
        assert "checked here, latency predicted" in result.stdout


def test_targets_lists_the_language_model_builds_and_their_status(edgeml_cli):
    from edgeml.doctor import language_model_status
    from edgeml.targets import TARGETS

    result = edgeml_cli("targets")
    assert result.exit_code == 0
    for target in TARGETS.values():
        assert (f"{target.name}: language models" in result.stdout) == bool(target.language_models)
        for candidate in target.language_models:
            assert candidate.name in result.stdout
            status = language_model_status(candidate)
            runs_here = "checked here, latency predicted" if candidate.on_device else "measured here"
            assert status["status"] == (runs_here if not candidate.missing() else "not served here")
    assert "executorch-xnnpack-8da4w" in result.stdout and "onnxruntime-genai-int4" in result.stdout
    assert "tensorrt-edgellm-int4-awq" in result.stdout and "tensorrt-llm-fp16" in result.stdout


def test_image_folder_with_split(edgeml_cli, files, digits, tmp_path):
    """PNG files, one folder per class: preprocessing comes from the model and lands in the bundle."""
    from PIL import Image

    images = tmp_path / "images"
    for i, (img, label) in enumerate(zip(digits.test.inputs["input"][:, 0], digits.test.labels)):
        (images / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(images / str(label) / f"{i}.png")
    out = tmp_path / "out"
    result = edgeml_cli("optimize", files["digits.onnx"], "--data", images, "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, manifest = check_run(out, kind="onnx")
    assert report["data"]["calibration"]["classes"] == [str(c) for c in range(10)]
    assert manifest["preprocessing"] == {"size": [8, 8], "layout": "NCHW", "color": "gray", "scale": 1 / 255,
                                         "mean": [0.0], "std": [1.0]}


def test_metric_is_chosen_by_the_user_when_outputs_are_embeddings(edgeml_cli, files, tmp_path):
    """2-D outputs look like class scores; an embedding model says --metric cosine, and the budget follows."""
    out = tmp_path / "out"
    result = edgeml_cli("optimize", files["digits.onnx"], "--precision", "int8", "--metric", "cosine",
                        "--calib-data", files["calib.npz"], "--eval-data", files["eval.npz"], "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["quality_metric"] == "cosine" and report["config"]["recipe"]["metric"] == "cosine"
    chosen = next(r for r in report["rows"] if r["selected"])
    assert abs(chosen["quality_drop"] - (1 - chosen["metrics"]["cosine"])) < 1e-6
    assert "metric: cosine" in (out / "recipe.yaml").read_text()

    np.savez(tmp_path / "unlabelled.npz", input=np.load(files["eval.npz"])["input"])
    result = edgeml_cli("optimize", files["digits.onnx"], "--metric", "accuracy", "--eval-data",
                        tmp_path / "unlabelled.npz", "-o", tmp_path / "b", *QUICK)
    assert result.exit_code == 2 and "--metric accuracy needs labels" in result.stderr
    assert not (tmp_path / "b").exists()
