"""Targets beyond this CPU, end to end: profiles on the command line, the plan changes a profile
makes, and what a jetson/gpu run leaves for the device."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from edgeml.profiles import BUNDLED

QUICK = ("--measure-seconds", "0.05", "--threads", "1")
NO_TENSORRT = importlib.util.find_spec("tensorrt") is None


def rows_of(out):
    report = json.loads((out / "report.json").read_text())
    return report, {r["name"]: r for r in report["rows"]}


def test_profiles_list_and_show(edgeml_cli):
    result = edgeml_cli("profiles", "list")
    assert result.exit_code == 0
    for name in ("jetson-orin-nano", "jetson-orin-nx", "raspberry-pi-5", "android-phone", "nvidia-t4"):
        assert name in result.stdout
    result = edgeml_cli("profiles", "show", "jetson-orin-nano")
    assert result.exit_code == 0
    shown = yaml.safe_load(result.stdout)
    assert shown["dla_cores"] == 0 and shown["runtimes"]["tensorrt"]
    result = edgeml_cli("profiles", "show", "jetson-orin-nanoo")
    assert result.exit_code == 2 and "jetson-orin-nano" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.skipif(not NO_TENSORRT, reason="on a machine with TensorRT the jetson candidates run for real")
def test_jetson_bundle_for_orin_nx(edgeml_cli, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", "--example", "digits", "--target", "jetson", "--profile", "jetson-orin-nx",
                        "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, rows = rows_of(out)
    assert report["profile"]["name"] == "jetson-orin-nx"
    candidates = {n: r for n, r in rows.items() if r["role"] == "candidate"}
    assert set(candidates) == {"tensorrt-fp16", "tensorrt-int8", "tensorrt-int8-dla"}
    for r in candidates.values():
        # Quality measured here with ONNX Runtime on the same file; latency only predicted, never measured.
        assert r["status"] == "predicted" and r["latency"] is None
        assert r["predicted"]["label"] == "predicted" and r["predicted"]["ms"] > 0
        assert r["predicted"]["profile"] == "jetson-orin-nx"
        assert r["metrics"]["accuracy"] > 0.95 and "not a Jetson" in r["reason"]
    assert candidates["tensorrt-int8-dla"]["predicted"]["unit"] == "one DLA core"
    chosen = next(r for r in candidates.values() if r["selected"])
    assert report["selection"]["basis"] == "predicted"
    assert chosen["predicted"]["ms"] == min(r["predicted"]["ms"] for r in candidates.values() if r["within_budget"])

    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "predicted" and "latency_ms" not in manifest["metrics"]
    assert manifest["metrics"]["predicted"]["ms"] == chosen["predicted"]["ms"]
    assert manifest["profile"]["runtimes"]["tensorrt"] == "10.3"
    assert {"model.onnx", "build_engine.sh", "reference.npz"} <= {f["path"] for f in manifest["files"]}
    ort.InferenceSession(str(bundle / "model.onnx"))           # the file trtexec gets is valid ONNX
    md = (out / "report.md").read_text()
    assert "p50 ms (predicted, jetson-orin-nx)" in md and "**predicted** for NVIDIA Jetson Orin NX" in md
    assert "| predicted, selected |" in md and "## Device profile" in md

    result = edgeml_cli("build-engine", bundle)
    assert result.exit_code == 2 and "run build_engine.sh on the device" in result.stderr


def test_orin_nano_has_no_dla_and_xavier_has_no_dla_figure(edgeml_cli, tmp_path):
    out = tmp_path / "nano"
    result = edgeml_cli("optimize", "--example", "digits", "--target", "jetson", "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, rows = rows_of(out)
    assert report["profile"]["name"] == "jetson-orin-nano"                   # the target's default profile
    assert rows["tensorrt-int8-dla"]["status"] == "skipped"
    assert "has no DLA cores" in rows["tensorrt-int8-dla"]["reason"]
    assert "skipped: NVIDIA Jetson Orin Nano 8GB has no DLA cores" in (out / "report.md").read_text()

    if NO_TENSORRT:
        out = tmp_path / "xavier"
        result = edgeml_cli("optimize", "--example", "digits", "--target", "jetson", "--profile",
                            "jetson-xavier-nx", "--precision", "int8", "-o", out, *QUICK)
        assert result.exit_code == 0, result.stderr
        _, rows = rows_of(out)
        # Xavier's datasheet gives no DLA throughput: the row is built and checked, its latency unknown.
        assert rows["tensorrt-int8-dla"]["status"] == "needs device"
        assert rows["tensorrt-int8-dla"]["predicted"]["ms"] is None
        assert rows["tensorrt-int8"]["status"] == "predicted"


def own_profile(tmp_path, **changes):
    data = yaml.safe_load((BUNDLED / "jetson-orin-nano.yaml").read_text())
    data.update(changes)
    path = tmp_path / "my-device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_device_without_an_int8_path_changes_the_plan(edgeml_cli, tmp_path):
    path = own_profile(tmp_path, precisions=["fp32", "fp16"], peak_gops={"fp32": 1000, "fp16": 4000})
    out = tmp_path / "out"
    result = edgeml_cli("optimize", "--example", "digits", "--target", "jetson", "--profile", path, "-o", out,
                        *QUICK)
    assert result.exit_code == 0, result.stderr
    report, rows = rows_of(out)
    assert report["profile"]["name"] == "my-device"
    assert rows["tensorrt-int8"]["status"] == "skipped" and "no INT8 compute path" in rows["tensorrt-int8"]["reason"]
    assert rows["tensorrt-fp16"]["selected"]


def test_model_larger_than_the_device_memory_is_an_error(edgeml_cli, tmp_path):
    path = own_profile(tmp_path, memory_gb=0.0001)
    out = tmp_path / "out"
    result = edgeml_cli("optimize", "--example", "digits", "--target", "jetson", "--profile", path, "-o", out,
                        *QUICK)
    assert result.exit_code == 2 and not out.exists()
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the model's weights take 0.6 MB in FP32, more than the 0.0001 GB of memory")


def test_profile_for_another_target_and_a_broken_profile(edgeml_cli, tmp_path):
    result = edgeml_cli("optimize", "--example", "digits", "--target", "jetson", "--profile", "nvidia-t4",
                        "-o", tmp_path / "a")
    assert result.exit_code == 2 and "use --target gpu" in result.stderr
    path = own_profile(tmp_path, dla_cores="two")
    result = edgeml_cli("optimize", "--example", "digits", "--target", "jetson", "--profile", path,
                        "-o", tmp_path / "b")
    assert result.exit_code == 2 and "dla_cores" in result.stderr and not (tmp_path / "b").exists()


def test_gpu_target_without_cuda_says_so(edgeml_cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the CUDA candidates are measured, not skipped")
    out = tmp_path / "out"
    result = edgeml_cli("optimize", "--example", "digits", "--target", "gpu", "--profile", "nvidia-l4",
                        "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    _, rows = rows_of(out)
    for name in ("torch-cuda-fp16", "onnxruntime-cuda"):
        assert rows[name]["status"] == "skipped" and "CUDA" in rows[name]["reason"]
    assert rows["tensorrt-int8"]["predicted"]["profile"] == "nvidia-l4"


def test_mobile_target_needs_the_pytorch_model(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", files["digits.onnx"], "--target", "mobile", "--calib-data", files["calib.npz"],
                        "-o", out, *QUICK)
    assert result.exit_code == 2 and not out.exists()
    assert result.stderr.strip().splitlines()[-1] == (
        "error: target 'mobile' converts PyTorch models and MODEL is ONNX: give the PyTorch model "
        "(package.module:factory with --weights, or a .pt2 file)")


def test_mobile_target_measures_litert_and_predicts_the_phone(edgeml_cli, files, tmp_path):
    out = tmp_path / "out"
    result = edgeml_cli("optimize", files["digits.pt2"], "--target", "mobile", "--calib-data", files["calib.npz"],
                        "--eval-data", files["eval.npz"], "-o", out, *QUICK)
    assert result.exit_code == 0, result.stderr
    report, rows = rows_of(out)
    assert report["profile"]["name"] == "android-phone"
    for name in ("litert-fp32", "litert-fp16", "litert-int8"):
        r = rows[name]
        assert r["status"] == "ok" and r["latency"]["p50_ms"] > 0                 # measured on this CPU
        assert r["predicted"]["profile"] == "android-phone" and r["predicted"]["ms"] > 0
        assert r["metrics"]["accuracy"] > 0.93, (name, r["metrics"])
    assert rows["litert-fp32"]["metrics"]["max_abs_error"] < 1e-3
    assert report["selection"]["basis"] == "measured"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["entry"] == "model.tflite" and manifest["backend"]["name"] == "litert"

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(out / "bundle" / "model.tflite"))
    interpreter.allocate_tensors()
    assert len(interpreter.get_input_details()) == 1
    x = np.load(files["eval.npz"])["input"][:1]
    assert interpreter.get_input_details()[0]["shape"].tolist() == list(x.shape)
