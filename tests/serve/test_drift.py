"""Drift in `edgeml serve`: the digits bundle's monitoring block (from its evaluation data, the test split),
live traffic over real HTTP that is in distribution (the train and validation splits, which the statistics
never saw) or shifted (a dimmer, washed-out capture), /health's flag, /metrics' gauges, one warning line
per crossing, `edgeml monitor`, and the detection and false-alarm rates over 100 windows each."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from servers import TOKEN, running

from edgeml.bundle.folder import MANIFEST, Bundle, schema
from edgeml.bundle.verify import verify
from edgeml.serve.drift import DriftDetector

WINDOWS = 100


def shifted(x: np.ndarray) -> np.ndarray:
    """A dimmer, washed-out sensor: 70% of the contrast, on a raised floor."""
    return (0.7 * x + 0.15).astype(np.float32)


@pytest.fixture(scope="module")
def held_out(digits) -> np.ndarray:
    return np.concatenate([digits.train.inputs["input"], digits.validation.inputs["input"]])


@pytest.fixture(scope="module")
def manifest(bundle) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def send(server, inputs: np.ndarray, per_request: int = 50) -> None:
    for start in range(0, len(inputs), per_request):
        status, answer = server.predict({"inputs": {"input": inputs[start:start + per_request].tolist()}})
        assert status == 200, answer


def psi(server, kind: str, summary: str) -> float:
    return server.metrics()[("edgeml_serve_drift_score", (("kind", kind), ("name", kind), ("statistic", "psi"),
                                                          ("summary", summary)))]


def test_the_manifest_holds_the_monitoring_block_and_verifies(bundle, manifest):
    monitoring = manifest["monitoring"]
    assert monitoring["samples"] == 360                               # the digits test split
    assert monitoring["drift"] == {"psi": 0.2, "pvalue": 0.01, "window": 200, "min_samples": 100}
    assert monitoring["class_scores"] == {"output": "logits"}
    assert [(f["kind"], f["summary"]) for f in monitoring["features"]] == [
        ("input", "mean"), ("input", "std"), ("output", "mean"), ("output", "std"), ("output", "confidence"),
        ("output", "class")]
    for feature in monitoring["features"]:
        assert abs(sum(feature["frequencies"]) - 1) < 1e-4
        if feature["summary"] != "class":
            assert len(feature["quantiles"]) == 101 and feature["quantiles"] == sorted(feature["quantiles"])
            assert len(feature["frequencies"]) == len(feature["edges"]) + 1
    assert manifest["lineage"]["recipe"]["drift"] == monitoring["drift"]
    assert verify(bundle, 1).passed


@pytest.mark.parametrize("break_it, where", [
    (lambda m: m["features"][0].pop("quantiles"), "monitoring/features/0"),
    (lambda m: m["features"][0]["frequencies"].__setitem__(0, 1.5), "monitoring/features/0/frequencies/0"),
    (lambda m: m["features"][0].update(summary="median"), "monitoring/features/0/summary"),
    (lambda m: m["features"][-1].update(edges=[0.5]), "monitoring/features/5"),
    (lambda m: m["drift"].update(pvalue=2), "monitoring/drift/pvalue"),
    (lambda m: m["class_scores"].update(output="softmax"), "monitoring/class_scores/output"),
    (lambda m: m.pop("drift"), "monitoring"),
])
def test_the_schema_refuses_a_malformed_monitoring_block(manifest, bundle, tmp_path, break_it, where):
    broken = copy.deepcopy(manifest)
    break_it(broken["monitoring"])
    assert list(Draft202012Validator(schema()).iter_errors(broken))
    folder = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    (folder / MANIFEST).write_text(json.dumps(broken))
    result = verify(folder, 1)
    assert not result.passed and f"does not match its schema at {where}" in result.checks[0].detail, result.checks


def test_detection_and_false_alarm_rates_over_100_windows(bundle, manifest, held_out):
    """100 windows of 200 held-out samples (seeded), as they are and shifted, through the bundle's own runtime."""
    runner = Bundle.open(bundle).open_runner(1)
    rng = np.random.default_rng(0)
    window = manifest["monitoring"]["drift"]["window"]
    alarms = detected = 0
    for _ in range(WINDOWS):
        sample = held_out[rng.choice(len(held_out), window, replace=False)]
        for inputs, hit in ((sample, False), (shifted(sample), True)):
            detector = DriftDetector(manifest["monitoring"], announce=lambda line: None)
            detector.observe({"input": inputs}, {"output": runner.run({"input": inputs})[0]})
            detector.evaluate()
            alarms += detector.drift and not hit
            detected += detector.drift and hit
    print(f"drift: detected {detected}/{WINDOWS} shifted windows, false alarms {alarms}/{WINDOWS} "
          "in-distribution windows")
    assert detected >= 0.95 * WINDOWS and alarms < 0.05 * WINDOWS


def test_drift_over_http_flags_once_clears_and_shows_in_monitor(bundle, held_out, edgeml_cli):
    rng = np.random.default_rng(1)
    picks = held_out[rng.permutation(len(held_out))]
    with running(bundle) as server:
        health = server.health()
        assert health["drift"] is False and health["monitoring"]["enabled"] and health["monitoring"]["samples"] == 0

        send(server, picks[:200])                                          # (b) in distribution: no drift
        health = server.health()
        assert health["drift"] is False and health["monitoring"]["samples"] == 200, health
        assert psi(server, "input", "mean") < 0.2

        send(server, shifted(picks[200:400]))                              # (a) shifted: flagged
        health = server.health()
        assert health["drift"] is True and {"kind": "input", "name": "input", "summary": "mean"} in \
            health["monitoring"]["drifting"], health
        metrics = server.metrics()
        assert metrics[("edgeml_serve_drift", ())] == 1 and metrics[("edgeml_serve_drift_window_samples", ())] == 200
        assert psi(server, "input", "mean") > 0.2 and psi(server, "output", "confidence") > 0.2
        send(server, shifted(picks[400:500]))                              # still drifting: no second warning

        result = edgeml_cli("monitor", server.url, "--once", "--token", TOKEN)   # (c)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].startswith(server.url) and "requests 10" in lines[0] and "drift: DRIFT (200/200" in lines[0]
        rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
        assert [row[:3] + row[-1:] for row in rows if row[2] == "mean"] == [["input", "input", "mean", "yes"],
                                                                            ["output", "output", "mean", "yes"]]
        wrong = edgeml_cli("monitor", server.url, "--once", "--token", "wrong")
        assert wrong.exit_code == 2 and "answered 401" in wrong.stderr and wrong.stderr.count("\n") == 1

        send(server, picks[500:700])                                       # back in distribution: cleared
        assert server.health()["drift"] is False
    warnings = [line for line in server.stderr.splitlines() if line.startswith("warning: drift")]
    assert len(warnings) == 1 and "input input " in warnings[0], server.stderr
    assert server.stderr.count("drift cleared") == 1, server.stderr


def test_monitor_of_an_unreachable_server_is_one_line(edgeml_cli):
    from servers import free_port

    result = edgeml_cli("monitor", f"http://127.0.0.1:{free_port()}", "--once")
    assert result.exit_code == 2 and "cannot reach" in result.stderr and result.stderr.count("\n") == 1


def test_a_bundle_without_monitoring_serves_with_drift_off(bundle, tmp_path, held_out):
    folder = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["monitoring"]
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    with running(folder) as server:
        send(server, shifted(held_out[:200]))
        health = server.health()
        assert health["drift"] is False and health["monitoring"]["enabled"] is False
        assert "no monitoring statistics" in health["monitoring"]["reason"]
        assert not [k for k in server.metrics() if k[0] == "edgeml_serve_drift_score"]
    assert "drift: not watched" in server.stderr
