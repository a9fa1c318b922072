"""`edgeml profile` on a bundle, and `edgeml report --merge` of what it measured."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import edgeml


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits):
    """A digits run for the CPU of a Raspberry Pi 5: its bundle is measured here and predicted for the Pi."""
    out = tmp_path_factory.mktemp("profile") / "run"
    edgeml.optimize(example="digits", out=out, precision="int8", profile="raspberry-pi-5", threads=1,
                    measure_seconds=0.05)
    return out


@pytest.fixture(scope="module")
def device_report(run_dir, tmp_path_factory):
    """The bundle shipped to another folder (the device) and profiled there."""
    from click.testing import CliRunner

    from edgeml.cli import cli

    device = tmp_path_factory.mktemp("device")
    shipped = shutil.copytree(run_dir / "bundle", device / "bundle")
    result = CliRunner().invoke(cli, ["profile", str(shipped), "--threads", "1", "--measure-seconds", "0.05",
                                      "-o", str(device / "device_report.json")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return device / "device_report.json", result.output


def test_profile_writes_the_device_report(run_dir, device_report):
    path, output = device_report
    report = json.loads(path.read_text())
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    entry = next(f["sha256"] for f in manifest["files"] if f["path"] == manifest["entry"])
    assert report["bundle"]["candidate"] == manifest["candidate"]
    assert report["bundle"]["entry_sha256"] == entry
    assert report["threads"] == 1 and report["machine"]["threads"] == 1
    latency = report["latency"]
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
    lo, hi = latency["p50_ci95_ms"]
    assert lo <= latency["p50_ms"] <= hi and latency["throughput_per_s"] > 0
    has_reference = (run_dir / "bundle" / "reference.npz").is_file()
    assert report["input"] == "reference.npz, first sample" if has_reference else report["input"].startswith("random")
    assert "p50" in output and f"wrote {path}" in output


def test_profile_takes_reference_npz_else_a_random_input(run_dir, tmp_path, digits):
    from edgeml.deploy.on_device import profile_bundle

    bundle = shutil.copytree(run_dir / "bundle", tmp_path / "bundle")
    (bundle / "reference.npz").unlink(missing_ok=True)
    report = profile_bundle(bundle, threads=1, measure_seconds=0.02)
    assert report["input"] == "random (seed 0; no reference.npz in the bundle): input 1x1x8x8 float32"
    np.savez(bundle / "reference.npz", **{"input/input": digits.test.inputs["input"][:4]})
    report = profile_bundle(bundle, threads=1, measure_seconds=0.02)
    assert report["input"] == "reference.npz, first sample"


def test_profile_refuses_a_changed_entry_file(run_dir, tmp_path, edgeml_cli):
    bundle = shutil.copytree(run_dir / "bundle", tmp_path / "bundle")
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    result = edgeml_cli("profile", bundle, "-o", tmp_path / "r.json")
    assert result.exit_code == 2 and "differs from the manifest's sha256" in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_tensorrt_bundle_without_tensorrt_is_one_clear_line(run_dir, tmp_path, edgeml_cli):
    from edgeml.runtimes import BACKENDS

    if not BACKENDS["tensorrt"].missing():
        pytest.skip("TensorRT is installed here")
    bundle = shutil.copytree(run_dir / "bundle", tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["backend"]["name"] = "tensorrt"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = edgeml_cli("profile", bundle)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "TensorRT is not installed here: run `edgeml build-engine BUNDLE`" in result.stderr


def test_report_merge_puts_the_device_next_to_build_and_prediction(run_dir, device_report, edgeml_cli):
    path, _ = device_report
    device = json.loads(path.read_text())
    build = json.loads((run_dir / "report.json").read_text())
    chosen = next(r for r in build["rows"] if r["selected"])
    result = edgeml_cli("report", run_dir, "--merge", path)
    assert result.exit_code == 0, result.output
    section = result.output.split("## Measured on the device")[1].split("\n## ")[0]
    assert f"{chosen['name']}, this run's bundle, timed by `edgeml profile`" in section
    assert "| **measured on the device** |" in section
    build_ratio = device["latency"]["p50_ms"] / chosen["latency"]["p50_ms"]
    predicted_ratio = device["latency"]["p50_ms"] / chosen["predicted"]["ms"]
    assert "| measured at build time |" in section and f"{build_ratio:.2f}x" in section
    assert "| predicted (raspberry-pi-5) | Raspberry Pi 5 8GB |" in section and f"{predicted_ratio:.2f}x" in section

    html = edgeml_cli("report", run_dir, "--merge", path, "--format", "html", "-o", run_dir / "merged.html")
    assert html.exit_code == 0, html.output
    assert "<h2>Measured on the device</h2>" in (run_dir / "merged.html").read_text()
    merged = json.loads(edgeml_cli("report", run_dir, "--merge", path, "--format", "json").output)
    assert merged["device_report"] == device


@pytest.mark.parametrize("field, value", [("candidate", "openvino-int8"), ("entry_sha256", "0" * 64)])
def test_report_merge_refuses_another_bundle(run_dir, device_report, tmp_path, edgeml_cli, field, value):
    device = json.loads(device_report[0].read_text())
    device["bundle"][field] = value
    other = tmp_path / "other.json"
    other.write_text(json.dumps(device))
    result = edgeml_cli("report", run_dir, "--merge", other)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not this run's bundle" in result.stderr
