"""`edgeml benchmark`: several targets, one table, one folder per target."""

from __future__ import annotations

import json


def test_benchmark_across_targets(edgeml_cli, files, tmp_path):
    out = tmp_path / "bench"
    result = edgeml_cli("benchmark", files["digits.onnx"], "--targets", "cpu,mobile,jetson", "--precision", "int8",
                        "--calib-data", files["calib.npz"], "--eval-data", files["eval.npz"],
                        "--measure-seconds", "0.05", "--threads", "1", "-o", out)
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "benchmark.json").read_text())
    by_target = {t["target"]: t for t in record["targets"]}
    # An ONNX model cannot go to the mobile target: its row says why, and the other targets still run.
    assert "converts PyTorch models" in by_target["mobile"]["error"]
    assert (out / "cpu" / "bundle" / "manifest.json").exists() and (out / "jetson" / "report.json").exists()
    assert not (out / "mobile").exists()
    cpu = {r["name"]: r for r in by_target["cpu"]["rows"]}
    assert cpu["onnxruntime-int8"]["measured_ms"] > 0 and cpu["onnxruntime-int8"]["predicted_ms"] is None
    jetson = {r["name"]: r for r in by_target["jetson"]["rows"]}
    assert jetson["tensorrt-int8"]["measured_ms"] is None and jetson["tensorrt-int8"]["predicted_ms"] > 0
    table = (out / "benchmark.md").read_text()
    assert table in result.stdout
    assert "| cpu | **onnxruntime-int8** ✓ | onnxruntime | int8 | measured |" in table
    assert "(predicted) |" in table and "| mobile | — | — | — | failed: target 'mobile' converts" in table
    for line in table.splitlines():
        if "| measured |" in line:
            ms, fps = (float(c.split()[0]) for c in line.strip("| ").split(" | ")[-2:])
            assert abs(fps * ms / 1000 - 1) < 0.05            # ms is rounded to 3 decimals


def test_benchmark_refuses_unknown_target_before_work(edgeml_cli, files, tmp_path):
    out = tmp_path / "bench"
    result = edgeml_cli("benchmark", files["digits.onnx"], "--targets", "cpu,phone", "-o", out)
    assert result.exit_code == 2 and "unknown target 'phone'" in result.stderr and not out.exists()


def test_benchmark_stops_on_a_bad_model_for_every_target(edgeml_cli, files, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(files["digits.onnx"].read_bytes()[:200])
    out = tmp_path / "bench"
    result = edgeml_cli("benchmark", broken, "--targets", "cpu,jetson", "--calib-data", files["calib.npz"],
                        "--eval-data", files["eval.npz"], "-o", out)
    assert result.exit_code == 2 and "is not a valid ONNX model" in result.stderr, result.stderr
    assert not out.exists() and not list(tmp_path.glob(".bench*"))
