"""`edgeml rollout` to a fleet of three devices, three folders behind a real OpenSSH server on loopback (and,
cheaper, local folders): real digits bundles, canaries, the release links, the latency gate, rollback and the JSON
lines log; a real language model's bundle, checked by its answers and timed per decoded token."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

import edgeml
from edgeml.bundle.reference import read_reference, write_reference
from edgeml.deploy.releases import bundle_id
from edgeml.hashing import sha256_file

DEVICES = ("dev-1", "dev-2", "dev-3")
HOMES = "device homes"            # the devices' folders: a space, which the remote shell must get quoted
GENEROUS = {"max_latency_ratio": 50, "measure_seconds": 0.05}   # tiny model, busy machine: test the mechanics
WASTE_WIDTH = 16384     # the slow bundle's wasted product: its p50 5.4x the fp32 one's through run.py here


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory) -> dict[str, Path]:
    """Two optimize runs of the digits example (OUT folders: bundle/ beside report.json) and copies of the fp32 one:
    a broken int8 copy (its reference outputs negated, so its files verify but its check fails); a twin (the same
    files, its manifest written compactly: another release id, the same speed); a slow one (the same outputs with
    real wasted work added, see `waste`; its report.json the fast build's, as if the build machine were faster)."""
    out = tmp_path_factory.mktemp("rollout-runs")
    for name, settings in {"fp32": {"precision": "fp32"}, "int8": {"precision": "int8", "quantizer": "ort"}}.items():
        edgeml.optimize(example="digits", out=out / name, threads=1, measure_seconds=0.05, **settings)
    bad = shutil.copytree(out / "int8", out / "bad") / "bundle"
    inputs, outputs, tolerance = read_reference(bad / "reference.npz")
    write_reference(bad / "reference.npz", inputs, {k: -v for k, v in outputs.items()}, tolerance)
    rehash(bad, "reference.npz")
    twin = shutil.copytree(out / "fp32", out / "twin") / "bundle"
    (twin / "manifest.json").write_text(json.dumps(json.loads((twin / "manifest.json").read_text())))
    slow = shutil.copytree(out / "fp32", out / "slow") / "bundle"
    waste(slow / "model.onnx", WASTE_WIDTH)
    report = json.loads((slow.parent / "report.json").read_text())
    report["bundle"] = rehash(slow, "model.onnx")
    (slow.parent / "report.json").write_text(json.dumps(report))
    return {name: out / name / "bundle" for name in ("fp32", "int8", "bad", "twin", "slow")}


def rehash(bundle: Path, name: str) -> dict:
    """Record the bundle's file `name` in its manifest again (sha256 and size) after changing it; the manifest."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for f in manifest["files"]:
        if f["path"] == name:
            f["sha256"], f["size"] = sha256_file(bundle / name), (bundle / name).stat().st_size
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def waste(model: Path, width: int) -> None:
    """Make an ONNX model of one input and one output slower with real work and the same outputs: the flattened input
    times a random (features, width) matrix, summed, times 0, added to the output. ONNX Runtime cannot fold it away:
    the product depends on the input, and x * 0 is not 0 for every float."""
    m = onnx.load(model)
    g = m.graph
    out, features = g.output[0].name, int(np.prod([d.dim_value for d in g.input[0].type.tensor_type.shape.dim[1:]]))
    for node in g.node:
        node.output[:] = ["waste_kept" if name == out else name for name in node.output]
    weight = np.random.default_rng(0).standard_normal((features, width)).astype(np.float32)
    g.initializer.extend([numpy_helper.from_array(weight, "waste_weight"),
                          numpy_helper.from_array(np.array([1], np.int64), "waste_axes"),
                          numpy_helper.from_array(np.zeros((), np.float32), "waste_zero")])
    g.node.extend([helper.make_node("Flatten", [g.input[0].name], ["waste_flat"]),
                   helper.make_node("MatMul", ["waste_flat", "waste_weight"], ["waste_wide"]),
                   helper.make_node("ReduceSum", ["waste_wide", "waste_axes"], ["waste_sum"]),
                   helper.make_node("Mul", ["waste_sum", "waste_zero"], ["waste_none"]),
                   helper.make_node("Add", ["waste_kept", "waste_none"], [out])])
    onnx.checker.check_model(m)
    onnx.save(m, model)


def ssh_fleet(tmp_path: Path, sshd: dict, **thresholds) -> Path:
    """fleet.yaml: three devices, folders of tmp_path/devices reached over ssh; their run.py runs with this Python."""
    devices = [{"name": name, "to": f"{sshd['url']}{tmp_path / HOMES / name}", "identity": str(sshd["identity"]),
                "ssh_options": sshd["options"], "python": sys.executable, "threads": 1} for name in DEVICES]
    return _write(tmp_path, {"devices": devices, "thresholds": {**GENEROUS, **thresholds}})


def local_fleet(tmp_path: Path, **thresholds) -> Path:
    devices = [{"name": name, "to": f"{HOMES}/{name}"} for name in DEVICES]
    return _write(tmp_path, {"devices": devices, "thresholds": {**GENEROUS, **thresholds}})


def _write(tmp_path: Path, fleet: dict) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


def links(tmp_path: Path, name: str) -> tuple[str | None, str | None]:
    """What `current` and `previous` of a device point at (loopback: its folder is here too)."""
    folder = tmp_path / HOMES / name
    return tuple(os.readlink(folder / link) if (folder / link).is_symlink() else None
                 for link in ("current", "previous"))


def log_of(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "edgeml-rollout" / "rollout.jsonl").read_text().splitlines()]


def steps(records: list[dict], run: str) -> list[tuple[str, str | None, str]]:
    return [(r["step"], r.get("device"), r["outcome"]) for r in records if r["run"] == run and "device" in r]


def test_rollout_canary_first_then_the_fleet_then_rollback(tmp_path, runs, sshd, edgeml_cli):
    fleet = ssh_fleet(tmp_path, sshd)
    first, second = bundle_id(runs["fp32"]), bundle_id(runs["int8"])

    result = edgeml_cli("rollout", runs["fp32"], "--fleet", fleet)
    assert result.exit_code == 0, result.output + result.stderr
    assert f"rolled out {first} (onnxruntime-fp32) to 3 device(s)" in result.output
    for name in DEVICES:
        assert links(tmp_path, name) == (f"releases/{first}", None)
        assert sha256_file(tmp_path / HOMES / name / "current" / "model.onnx") == \
            sha256_file(runs["fp32"] / "model.onnx")
    records = log_of(tmp_path)
    run = records[0]["run"]
    assert records[0]["step"] == "start" and records[0]["canaries"] == ["dev-1"] and records[-1]["step"] == "end"
    assert steps(records, run) == [
        *[("state", n, "ok") for n in DEVICES],
        ("ship", "dev-1", "ok"), ("check", "dev-1", "ok"), ("profile", "dev-1", "ok"), ("compare", "dev-1", "ok"),
        ("switch", "dev-1", "ok"),
        *[(step, n, "ok") for n in DEVICES[1:] for step in ("ship", "check", "switch")]]
    compare = next(r for r in records if r["step"] == "compare")
    assert compare["ratio"] == pytest.approx(compare["device_p50_ms"] / compare["build_p50_ms"])
    assert all(r["started"] <= r["finished"] for r in records if "started" in r)
    assert records[-1]["running"] == {n: first for n in DEVICES}

    assert compare["baseline"] == "build" and "the build report's p50, timed elsewhere" in compare["detail"]

    result = edgeml_cli("rollout", runs["int8"], "--fleet", fleet, "--canary", "2")
    assert result.exit_code == 0, result.output + result.stderr
    for name in DEVICES:
        assert links(tmp_path, name) == (f"releases/{second}", f"releases/{first}")
    compares = [r for r in log_of(tmp_path) if r["step"] == "compare" and r["release"] == second]
    assert [(r["device"], r["baseline"], r["baseline_release"]) for r in compares] == [
        ("dev-1", "current", first), ("dev-2", "current", first)]
    assert all(len(r["round_ratios"]) == r["rounds"] == 9 for r in compares)

    result = edgeml_cli("rollout", "--fleet", fleet, "--rollback")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"rolled back: dev-1, dev-2, dev-3 run {first}" in result.output
    for name in DEVICES:
        assert links(tmp_path, name) == (f"releases/{first}", f"releases/{second}")
    assert [r["outcome"] for r in log_of(tmp_path) if r["step"] == "rollback"] == ["ok"] * 3


def test_a_failing_canary_changes_no_device(tmp_path, runs, sshd, edgeml_cli):
    good, bad = bundle_id(runs["fp32"]), bundle_id(runs["bad"])
    # the same device folders as local folders: the quicker way to put every device on the good bundle first
    assert edgeml_cli("rollout", runs["fp32"], "--fleet", local_fleet(tmp_path), "--canary", "3").exit_code == 0
    fleet = ssh_fleet(tmp_path, sshd)
    before = len(log_of(tmp_path))

    result = edgeml_cli("rollout", runs["bad"], "--fleet", fleet)
    assert result.exit_code == 1
    closing = result.output.strip().splitlines()[-2]
    assert closing.startswith("FAILED: canary dev-1 failed: check: run.py --check: output: FAILED: max error")
    assert closing.endswith("no device was switched, each stays on its previous release")
    for name in DEVICES:
        assert links(tmp_path, name) == (f"releases/{good}", None)
    assert (tmp_path / HOMES / "dev-1" / "releases" / bad).is_dir()          # shipped to the canary only
    assert not any((tmp_path / HOMES / n / "releases" / bad).exists() for n in DEVICES[1:])
    records = log_of(tmp_path)[before:]
    print("\n".join(json.dumps(r) for r in records))          # the canary-failure rollout's log
    assert steps(records, records[0]["run"]) == [
        *[("state", n, "ok") for n in DEVICES], ("ship", "dev-1", "ok"), ("check", "dev-1", "failed")]
    assert records[-1]["outcome"] == "failed" and records[-1]["running"] == {n: good for n in DEVICES}


def test_local_folders_latency_gate_and_rollback_without_previous(tmp_path, runs, edgeml_cli):
    fleet = local_fleet(tmp_path, max_latency_ratio=1.5)       # the devices run nothing: the build's p50 it is
    result = edgeml_cli("rollout", runs["slow"], "--fleet", fleet, "-o", tmp_path / "edgeml-rollout")
    assert result.exit_code == 1
    assert "dev-1: compare: failed: p50" in result.output
    assert "the build report's p50, timed elsewhere" in result.output and "as it runs no release yet" in result.output
    assert "over 9 rounds, its lower end above 1.5x" in result.output
    assert all(links(tmp_path, name) == (None, None) for name in DEVICES)

    result = edgeml_cli("rollout", "--fleet", fleet, "--rollback")
    assert result.exit_code == 1
    assert result.output.count("rollback: skipped: no previous release: left on nothing") == 3
    assert "FAILED: nothing was rolled back (no device has a previous release to go back to); dev-1, dev-2, dev-3 " \
           "run nothing yet" in result.output

    alone = shutil.copytree(runs["fp32"], tmp_path / "alone" / "bundle")            # no report.json beside it
    result = edgeml_cli("rollout", alone, "--fleet", local_fleet(tmp_path), "--canary", "3")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"latency check skipped: no report.json beside the bundle ({alone.parent / 'report.json'})" in result.output
    assert result.output.count("compare: skipped: latency check skipped") == 3
    assert result.output.count("nor can it be timed against the release the device runs: it runs no release yet") == 3
    assert all(links(tmp_path, name)[0] == f"releases/{bundle_id(alone)}" for name in DEVICES)


def one_device(tmp_path: Path, **thresholds) -> Path:
    """fleet.yaml: one local folder device timed with one thread, 9 rounds of 0.05 / 9 s."""
    return _write(tmp_path, {"devices": [{"name": "dev-1", "to": f"{HOMES}/dev-1", "threads": 1}],
                             "thresholds": {"measure_seconds": 0.05, **thresholds}})


def test_an_equally_fast_release_passes_the_gate_20_times_of_20(tmp_path, runs, edgeml_cli):
    """Timed together with the release the device runs (the same model), not against the build report's p50 from
    another process (1.73x for a healthy bundle once), a canary passes the default 1.5x in every one of 20 rollouts."""
    fleet = one_device(tmp_path)
    ids = [bundle_id(runs[name]) for name in ("fp32", "twin")]
    assert ids[0] != ids[1]
    assert edgeml_cli("rollout", runs["twin"], "--fleet", fleet, "--max-latency-ratio", "50").exit_code == 0
    failed = []
    for i in range(20):
        result = edgeml_cli("rollout", runs[("fp32", "twin")[i % 2]], "--fleet", fleet)
        if result.exit_code != 0:
            failed.append(result.output)
    assert not failed, failed
    assert links(tmp_path, "dev-1") == (f"releases/{ids[1]}", f"releases/{ids[0]}")
    compares = [r for r in log_of(tmp_path) if r["step"] == "compare"][1:]
    assert [(r["baseline"], r["baseline_release"], r["release"]) for r in compares] == [
        ("current", ids[(i + 1) % 2], ids[i % 2]) for i in range(20)]
    assert all(r["outcome"] == "ok" and r["max_latency_ratio"] == 1.5 and len(r["round_ratios"]) == 9
               and r["ratio_ci95"][0] <= 1.5 for r in compares)
    print("slowdowns:", [f"{r['ratio']:.2f} ({r['ratio_ci95'][0]:.2f}-{r['ratio_ci95'][1]:.2f})" for r in compares])


def test_a_slower_build_fails_against_the_release_it_would_replace_unless_the_command_line_allows_it(
        tmp_path, runs, edgeml_cli):
    fleet = one_device(tmp_path, max_latency_ratio=1.5)
    fast, slow = bundle_id(runs["fp32"]), bundle_id(runs["slow"])
    assert edgeml_cli("rollout", runs["fp32"], "--fleet", fleet, "--max-latency-ratio", "50").exit_code == 0

    result = edgeml_cli("rollout", runs["slow"], "--fleet", fleet)
    assert result.exit_code == 1
    compare = log_of(tmp_path)[-2]
    print(json.dumps(compare))
    assert compare["step"] == "compare" and compare["outcome"] == "failed"
    assert compare["baseline"] == "current" and compare["baseline_release"] == fast and compare["rounds"] == 9
    line = next(line for line in result.output.splitlines() if line.startswith("dev-1: compare: failed: p50 "))
    assert f"the release it runs, timed together ({fast}: " in line and "its lower end above 1.5x" in line
    assert result.output.strip().splitlines()[-2].startswith("FAILED: canary dev-1 failed: compare: p50 ")
    assert links(tmp_path, "dev-1") == (f"releases/{fast}", None)

    result = edgeml_cli("rollout", runs["slow"], "--fleet", fleet, "--max-latency-ratio", "50")
    assert result.exit_code == 0, result.output
    records = log_of(tmp_path)
    start, compare = [r for r in records if r["run"] == records[-1]["run"] and r["step"] in ("start", "compare")]
    assert start["thresholds"] == {"max_latency_ratio": 50, "measure_seconds": 0.05, "rounds": 9}
    assert compare["outcome"] == "ok" and compare["baseline_release"] == fast and "not above 50x" in compare["detail"]
    assert links(tmp_path, "dev-1") == (f"releases/{slow}", f"releases/{fast}")


def test_a_release_that_cannot_run_is_no_baseline(tmp_path, runs, edgeml_cli):
    fleet = one_device(tmp_path, max_latency_ratio=50)
    assert edgeml_cli("rollout", runs["fp32"], "--fleet", fleet).exit_code == 0
    (tmp_path / HOMES / "dev-1" / "current" / "model.onnx").unlink()       # what the device runs cannot open now
    result = edgeml_cli("rollout", runs["twin"], "--fleet", fleet)
    assert result.exit_code == 0, result.output
    compare = next(r for r in reversed(log_of(tmp_path)) if r["step"] == "compare")
    assert compare["baseline"] == "build" and compare["baseline_release"] is None
    assert f"as the release it runs ({bundle_id(runs['fp32'])}) cannot be timed there: " in compare["detail"]


def test_a_rollback_that_leaves_mixed_releases_fails_and_says_who_runs_what(tmp_path, runs, edgeml_cli):
    fleet = _write(tmp_path, {"devices": [{"name": n, "to": f"{HOMES}/{n}", "threads": 1} for n in DEVICES[:2]],
                              "thresholds": GENEROUS})
    first = tmp_path / "first.yaml"                         # dev-1 alone, the same folder
    first.write_text(yaml.safe_dump({"devices": [{"name": "dev-1", "to": f"{HOMES}/dev-1", "threads": 1}],
                                     "thresholds": GENEROUS}))
    old, new = bundle_id(runs["fp32"]), bundle_id(runs["twin"])
    assert edgeml_cli("rollout", runs["fp32"], "--fleet", first, "-o", tmp_path / "edgeml-rollout").exit_code == 0
    assert edgeml_cli("rollout", runs["twin"], "--fleet", fleet, "--canary", "2").exit_code == 0

    result = edgeml_cli("rollout", "--fleet", fleet, "--rollback")     # dev-1 goes back; dev-2 has no previous
    assert result.exit_code == 1
    assert f"FAILED: rolled back dev-1, but the fleet runs mixed releases: dev-1 runs {old}; dev-2 runs {new}" \
        in result.output
    assert links(tmp_path, "dev-1") == (f"releases/{old}", f"releases/{new}")
    assert links(tmp_path, "dev-2") == (f"releases/{new}", None)
    assert log_of(tmp_path)[-1]["outcome"] == "failed"

    result = edgeml_cli("rollout", "--fleet", first, "--rollback", "-o", tmp_path / "edgeml-rollout")
    assert result.exit_code == 0 and f"rolled back: dev-1 runs {new}" in result.output    # one release again


@pytest.mark.parametrize("form", ["url", "scp"])
def test_an_unreachable_device_stops_the_rollout_before_anything_changes(tmp_path, runs, edgeml_cli, form):
    with socket.socket() as s:                   # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    far = ({"to": f"ssh://nobody@127.0.0.1:{port}/srv", "ssh_options": {"BatchMode": "yes"}} if form == "url" else
           {"to": "nobody@127.0.0.1:/srv", "ssh_options": {"BatchMode": "yes", "Port": port}})
    fleet = _write(tmp_path, {"devices": [{"name": "dev-1", "to": f"{HOMES}/dev-1"}, {"name": "dev-2", **far}]})
    result = edgeml_cli("rollout", runs["fp32"], "--fleet", fleet)
    assert result.exit_code == 1
    assert ("FAILED: cannot read the state of dev-2 (state: cannot reach nobody@127.0.0.1 over ssh (port "
            f"{port})") in result.output
    assert "nothing was changed" in result.output and not (tmp_path / HOMES).exists()
    assert not any("@" in p.name for p in tmp_path.iterdir())


def test_a_device_given_as_user_at_host_colon_path_is_reached_over_ssh(tmp_path, runs, sshd, edgeml_cli):
    login = sshd["url"].removeprefix("ssh://").rsplit(":", 1)[0]
    fleet = _write(tmp_path, {"devices": [{"name": "dev-1", "to": f"{login}:{tmp_path / HOMES / 'dev-1'}",
                                           "identity": str(sshd["identity"]), "python": sys.executable, "threads": 1,
                                           "ssh_options": {**sshd["options"], "Port": sshd["port"]}}],
                              "thresholds": GENEROUS})
    result = edgeml_cli("rollout", runs["fp32"], "--fleet", fleet)
    assert result.exit_code == 0, result.output + result.stderr
    assert f"dev-1: ship: ok: ssh://{login}{tmp_path / HOMES / 'dev-1' / 'releases' / bundle_id(runs['fp32'])} " \
        in result.output
    assert links(tmp_path, "dev-1") == (f"releases/{bundle_id(runs['fp32'])}", None)


def test_a_language_model_is_checked_by_its_answers_and_timed_per_token(tmp_path, lm_run, runs, edgeml_cli):
    """The tiny LM's bundle of `edgeml optimize` to two local folders: run.py --verify on each device, the canary's
    decode time per token against the build's decode rate, then a twin (another release id) against the release
    the devices run; an image model's bundle after it is not compared with it; --rollback."""
    bundle = lm_run[0] / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    twin = shutil.copytree(bundle, tmp_path / "twin" / "bundle")
    (twin / "manifest.json").write_text(json.dumps({**manifest, "name": "twin"}))     # files as listed: same sha256
    first, second = bundle_id(bundle), bundle_id(twin)
    fleet = _write(tmp_path, {"devices": [{"name": n, "to": f"{HOMES}/{n}", "threads": 1} for n in DEVICES[:2]],
                              "thresholds": GENEROUS})

    result = edgeml_cli("rollout", bundle, "--fleet", fleet)
    assert result.exit_code == 0, result.output + result.stderr
    assert f"rolled out {first} ({manifest['build']}) to 2 device(s)" in result.output
    records = log_of(tmp_path)
    checks = [r for r in records if r["step"] == "check"]
    assert [(r["device"], r["outcome"], r["detail"]) for r in checks] == [
        (n, "ok", "run.py --verify: 4/4 reference answers reproduced token for token") for n in DEVICES[:2]]
    profile = next(r for r in records if r["step"] == "profile")
    assert profile["unit"] == "ms per token" and profile["input"].startswith("reference.json prompt ")
    assert f"p50 {profile['p50_ms']:.4f} ms per token ({1000 / profile['p50_ms']:.1f} tokens/s)" in profile["detail"]
    assert f"dev-1: profile: ok: p50 {profile['p50_ms']:.4f} ms per token (" in result.output
    compare = next(r for r in records if r["step"] == "compare")
    assert compare["baseline"] == "build" and compare["unit"] == "ms per token"
    assert compare["build_p50_ms"] == pytest.approx(1000 / manifest["speed"]["decode_tokens_per_s"])
    assert "the build's decode rate, timed elsewhere (" in compare["detail"] and " tokens/s" in compare["detail"]

    result = edgeml_cli("rollout", twin, "--fleet", fleet)
    assert result.exit_code == 0, result.output + result.stderr
    compare = [r for r in log_of(tmp_path) if r["step"] == "compare"][-1]
    assert (compare["release"], compare["baseline"], compare["baseline_release"]) == (second, "current", first)
    assert f"the release it runs, timed together ({first}: " in compare["detail"] and len(compare["round_ratios"]) == 9

    result = edgeml_cli("rollout", runs["fp32"], "--fleet", fleet)        # an image model's bundle: ms, not per token
    assert result.exit_code == 0, result.output + result.stderr
    assert (f"dev-1: compare: skipped: latency check skipped: the release it runs ({second}) is timed in ms per token, "
            "this bundle in ms: not comparable") in result.output

    result = edgeml_cli("rollout", "--fleet", fleet, "--rollback")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"rolled back: dev-1, dev-2 run {second}" in result.output


def test_device_timing_refuses_a_language_model_whose_answers_are_too_short(lm_run, tmp_path):
    from edgeml.deploy import device_timing

    bundle = shutil.copytree(lm_run[0] / "bundle", tmp_path / "bundle")
    reference = json.loads((bundle / "reference.json").read_text())
    (bundle / "reference.json").write_text(json.dumps({**reference, "output_ids": [a[:1] for a in
                                                                                   reference["output_ids"]]}))
    with pytest.raises(ValueError, match="the longest reference answer has 1 token"):
        device_timing.load(bundle, 0, None)


def test_every_fleet_problem_is_one_line(tmp_path, edgeml_cli):
    bundle = tmp_path / "bundle"                    # the fleet file and the options are checked before the bundle
    fleet = _write(tmp_path, {
        "devices": [{"name": "a", "to": "pi@10.0.0.5::models"},
                    {"name": "b", "to": "ftp://host/x", "threads": 0},
                    {"name": "c", "to": "c", "identity": "nope.key", "colour": "red"},
                    {"name": "d", "to": "d"}, {"name": "d", "to": "e"}],
        "thresholds": {"max_latency_ratio": 1, "rounds": 2.5, "speed": 2}, "extra": 1})
    result = edgeml_cli("rollout", bundle, "--fleet", fleet)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith(f"error: {fleet}: ") for line in lines)
    for expected in ["unknown key 'extra'", "devices[0] (a): to pi@10.0.0.5::models: host::module is an rsync "
                     "daemon", "devices[1] (b): to ftp://host/x: use ssh://",
                     "devices[1] (b): threads: a whole number", "devices[2] (c): unknown key 'colour'",
                     "devices[2] (c): identity", "no such key file", "devices[2] (c): identity and ssh_options apply",
                     "device d: another device has the same name", "thresholds: max_latency_ratio: a number above 1",
                     "thresholds: rounds: a whole number, at least 5", "thresholds: unknown key 'speed'"]:
        assert any(expected in line for line in lines), (expected, lines)
    assert not (tmp_path / "edgeml-rollout").exists()

    result = edgeml_cli("rollout", bundle, "--fleet", local_fleet(tmp_path), "--canary", "4")
    assert result.exit_code == 2 and "--canary 4: give 1 to 3" in result.stderr
    result = edgeml_cli("rollout", bundle, "--fleet", local_fleet(tmp_path), "--rollback")
    assert result.exit_code == 2 and "or --rollback without one" in result.stderr
    result = edgeml_cli("rollout", bundle, "--fleet", local_fleet(tmp_path), "--max-latency-ratio", "0.5")
    assert result.exit_code == 2 and result.stderr == "error: --max-latency-ratio 0.5: a number above 1 (1.5: a " \
                                                      "canary may be up to 1.5x as slow)\n"
    result = edgeml_cli("rollout", bundle, "--fleet", local_fleet(tmp_path))
    assert result.exit_code == 2 and "is not an edgeml bundle" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "edgeml-rollout").exists()


def test_the_readme_shows_the_example_fleet_as_it_is(tmp_path):
    from edgeml.deploy.fleet import FleetError, load_fleet

    example = Path(__file__).parents[2] / "examples" / "fleet.yaml"
    assert f"```yaml\n{example.read_text()}```" in (example.parents[1] / "README.md").read_text()
    with pytest.raises(FleetError) as raised:                  # its only problem here: the key is not on this machine
        load_fleet(example)
    assert [p.split(": ", 1)[1] for p in raised.value.problems] == [
        f"devices[0] (kitchen-pi): identity {Path('~/.ssh/fleet_ed25519').expanduser()}: no such key file"]
    data = yaml.safe_load(example.read_text())
    del data["devices"][0]["identity"]
    fleet = load_fleet(_write(tmp_path, data))
    assert [d.name for d in fleet.devices] == ["kitchen-pi", "bench-rig"] and fleet.thresholds.max_latency_ratio == 1.5
    assert fleet.thresholds.rounds == 9
    assert fleet.devices[0].destination.host == "10.0.0.5" and fleet.devices[0].threads == 4
