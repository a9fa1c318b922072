"""`edgeml doctor`: installed runtimes, this machine, and what each target can do here."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path

import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edgeml.cli import cli
from edgeml.doctor import CHECKED, MEASURED, NOT_SERVED, PACKAGES
from edgeml.measure import cpu_features
from edgeml.runtimes.tensorrt import TENSORRT
from edgeml.targets.jetson import TEGRA_RELEASE

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.fixture(scope="module")
def report() -> dict:
    result = CliRunner().invoke(cli, ["doctor", "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0
    return json.loads(result.stdout)


def candidates(report: dict, target: str) -> dict[str, dict]:
    return {c["name"]: c for t in report["targets"] if t["name"] == target for c in t["candidates"]}


def test_onnxruntime_reported_with_its_version_and_providers(report):
    packages = {p["package"]: p for p in report["packages"]}
    assert list(packages) == [name for name, _, _ in PACKAGES]
    onnxruntime = packages["onnxruntime"]
    assert onnxruntime["installed"] and onnxruntime["version"] == ort.__version__
    assert onnxruntime["details"]["execution_providers"] == ort.get_available_providers()
    assert packages["tensorrt"]["installed"] == (importlib.util.find_spec("tensorrt") is not None)


def test_cpu_onnxruntime_candidates_are_measured_here(report):
    ort_candidates = [c for c in candidates(report, "cpu").values() if c["backend"] == "onnxruntime"]
    assert len(ort_candidates) >= 2
    assert all(c["status"] == MEASURED for c in ort_candidates), ort_candidates
    assert all(c["detail"] == f"onnxruntime {ort.__version__}" for c in ort_candidates)


@pytest.mark.skipif(TEGRA_RELEASE.exists(), reason="on a Jetson its TensorRT candidates may be measured")
def test_jetson_tensorrt_candidates_are_not_measured_here(report):
    jetson = candidates(report, "jetson")
    assert set(jetson) == {"tensorrt-fp16", "tensorrt-int8", "tensorrt-int8-dla"}
    for c in jetson.values():
        assert c["status"] == CHECKED, c
        assert "not a Jetson" in c["detail"] and f"onnxruntime {ort.__version__}" in c["detail"]


def test_gpu_candidates_follow_this_machines_cuda(report):
    import torch

    cuda = torch.cuda.is_available()
    gpu = candidates(report, "gpu")
    assert gpu["torch-cuda-fp16"]["status"] == (MEASURED if cuda else NOT_SERVED)
    assert len(report["machine"]["gpus"]) == (torch.cuda.device_count() if cuda else 0) + TEGRA_RELEASE.exists()


def test_cpu_features_are_edgeml_detection(report):
    """The features, where they came from and the INT8 scheme: edgeml.measure.cpu_features' answers (its own
    tests check them against /proc/cpuinfo and the override, in tests/test_cpu_features.py)."""
    machine = report["machine"]
    source = cpu_features.source()
    assert machine["cpu_features_from"] == source
    assert machine["cpu_features"] == (None if source == cpu_features.UNKNOWN else cpu_features.shown())
    assert machine["int8_scheme"] == cpu_features.int8_scheme().to_dict()


def test_extras_are_those_of_pyproject():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    groups = {"edgeml": project["dependencies"],
              **{f"edgeml[{name}]": reqs for name, reqs in project["optional-dependencies"].items()}}
    for package, _, extra in PACKAGES:
        if package == "tensorrt":
            assert extra == TENSORRT.extra
            continue
        names = {re.match(r"[A-Za-z0-9._-]+", req).group().lower() for req in groups[extra]}
        assert package in names, (package, extra)


def test_the_packages_of_sweep_and_serve_are_listed(report):
    packages = {p["package"]: p for p in report["packages"]}
    for name, extra in (("ray", "edgeml[scale]"), ("fastapi", "edgeml[serve]"), ("uvicorn", "edgeml[serve]"),
                        ("prometheus-client", "edgeml[serve]")):
        assert packages[name]["extra"] == extra, name
        assert packages[name]["installed"] == (importlib.util.find_spec(packages[name]["module"]) is not None)


def test_tables_name_every_section_and_extra():
    result = CliRunner().invoke(cli, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 0
    for text in ("Installed packages", "This machine", "Targets", "CPU features", "INT8 scheme", "edgeml[cpu]",
                 "edgeml[tflite]", f"onnxruntime {ort.__version__}"):
        assert text in result.stdout, text
    assert "\x1b[" not in result.stdout
