"""The cache of intermediate work: entries on their own, then real `edgeml optimize` runs that use it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeml.cache import Cache, entry_name, max_bytes

RUN = ("--example", "digits", "--target", "cpu", "--threads", "1", "--measure-seconds", "0.05")


def _folder(tmp_path: Path, name: str, size: int) -> Path:
    folder = tmp_path / name
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "data.bin").write_bytes(os.urandom(size))
    return folder


def test_entry_names_hash_every_part_in_canonical_form():
    a = entry_name("build-x", onnx={"model.onnx": "ab"}, int8={"exclude": ["conv1"]}, seed=0)
    assert a == entry_name("build-x", seed=0, int8={"exclude": ["conv1"]}, onnx={"model.onnx": "ab"})
    assert a.startswith("build-x-") and len(a) == len("build-x-") + 64
    assert a != entry_name("build-x", onnx={"model.onnx": "ab"}, int8={"exclude": []}, seed=0)
    assert a != entry_name("build-y", onnx={"model.onnx": "ab"}, int8={"exclude": ["conv1"]}, seed=0)


def test_store_and_restore_keep_files_and_data(tmp_path):
    cache = Cache(tmp_path / "cache")
    source = _folder(tmp_path, "built", 1000)
    cache.store("e-1", source, {"entry": "sub/data.bin", "runtime_config": {"threads": [1, 2]}})
    assert cache.restore("e-1", tmp_path / "out") == {"entry": "sub/data.bin", "runtime_config": {"threads": [1, 2]}}
    assert (tmp_path / "out" / "sub" / "data.bin").read_bytes() == (source / "sub" / "data.bin").read_bytes()
    assert cache.restore("e-2", tmp_path / "other") is None and not (tmp_path / "other").exists()
    cache.store("e-1", _folder(tmp_path, "again", 10), {"entry": "late"})   # lost the race: the first one stays
    assert cache.restore("e-1", tmp_path / "out2") == {"entry": "sub/data.bin", "runtime_config": {"threads": [1, 2]}}
    assert sorted(p.name for p in cache.entries.iterdir()) == ["e-1"]      # no temporary folder left


@pytest.mark.parametrize("damage", ["truncate", "delete a file", "add a file", "delete meta.json", "bad meta.json"])
def test_a_damaged_entry_is_a_miss_and_is_deleted(tmp_path, damage):
    cache = Cache(tmp_path / "cache")
    cache.store("e-1", _folder(tmp_path, "built", 1000), {"entry": "sub/data.bin"})
    entry = cache.entries / "e-1"
    data = entry / "files" / "sub" / "data.bin"
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:500])
    elif damage == "delete a file":
        data.unlink()
    elif damage == "add a file":
        (entry / "files" / "extra.txt").write_text("x")
    elif damage == "delete meta.json":
        (entry / "meta.json").unlink()
    else:
        (entry / "meta.json").write_text('{"files": [')
    assert cache.restore("e-1", tmp_path / "out") is None
    assert not entry.exists() and not (tmp_path / "out").exists()


def test_the_size_bound_evicts_the_least_recently_used(tmp_path):
    cache = Cache(tmp_path / "cache", max_bytes=2500)
    cache.store("a", _folder(tmp_path, "a", 1000), {})
    cache.store("b", _folder(tmp_path, "b", 1000), {})
    os.utime(cache.entries / "a", (1_000_000, 1_000_000))      # a is older than b...
    os.utime(cache.entries / "b", (2_000_000, 2_000_000))
    assert cache.restore("a", tmp_path / "a-out") == {}        # ...until a hit makes it the most recent
    cache.store("c", _folder(tmp_path, "c", 1000), {})         # over 2500 bytes: b goes
    assert sorted(p.name for p in cache.entries.iterdir()) == ["a", "c"]
    Cache(tmp_path / "cache", max_bytes=0).store("d", _folder(tmp_path, "d", 10), {})
    assert list(cache.entries.iterdir()) == []


def test_a_cache_that_is_off_stores_nothing(tmp_path):
    cache = Cache(None)
    cache.store("e-1", _folder(tmp_path, "built", 10), {})
    assert cache.restore("e-1", tmp_path / "out") is None
    assert cache.fetch("e-1", tmp_path / "made", lambda: {"made": True}) == ({"made": True}, False)


def test_the_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EDGEML_CACHE_MAX_BYTES", "1000")
    assert max_bytes() == 1000
    monkeypatch.delenv("EDGEML_CACHE_MAX_BYTES")
    assert max_bytes() == 5 * 1024 ** 3


# Real runs on the digits example.

def _optimize(out: Path, cache: Path, *args) -> dict:
    """`edgeml optimize` in this process; its run record (report.json), with the progress lines as `stderr`."""
    from edgeml.cli import cli

    result = CliRunner().invoke(cli, ["optimize", *RUN, *map(str, args), "--cache-dir", str(cache), "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return {**json.loads((out / "report.json").read_text()), "stderr": result.stderr}


def _built(report: dict) -> dict[str, bool]:
    """Candidate rows that were built: name -> whether the build came from the cache."""
    return {r["name"]: r["cached"] for r in report["rows"] if r["role"] == "candidate" and r["status"] == "ok"}


def _model_files(out: Path) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in json.loads((out / "bundle" / "manifest.json").read_text())["files"]}


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "entries").iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, demo_run):
    """Two identical runs sharing one cache: (cache folder, first run dir, its record, second run dir, record).
    The first is the session's demo_run (RUN, into a cache of its own that was empty before it)."""
    cache, out1, stderr, settings = demo_run
    assert settings == RUN
    first = {**json.loads((out1 / "report.json").read_text()), "stderr": stderr}
    out2 = tmp_path_factory.mktemp("cached") / "out2"
    second = _optimize(out2, cache)
    return cache, out1, first, out2, second


def test_a_second_run_restores_the_export_and_every_build(two_runs):
    cache, out1, first, out2, second = two_runs
    assert not first["export"]["cached"] and not any(_built(first).values())
    assert second["export"]["cached"]
    built = _built(second)
    assert len(built) >= 5 and all(built.values()), built
    assert second["config"]["cache"] == str(cache)
    steps = {s["step"]: s["cached"] for s in second["steps"]}
    assert steps["Export to ONNX"] and all(steps[f"Candidate {name}"] for name in built)
    assert "✓ Export to ONNX (cached)" in second["stderr"]
    md = (out2 / "report.md").read_text()
    assert "(dynamo exporter) (from cache)" in md
    restored = [line.split(" | ")[0].removeprefix("| ") for line in md.splitlines() if line.endswith("(from cache) |")]
    assert sorted(restored) == sorted(built)             # the build column of the latency table
    assert "(from cache)" not in (out1 / "report.md").read_text()
    assert _model_files(out1) == _model_files(out2)
    assert len(_entries(cache)) == len(built) + 1     # the export and one build per candidate


def test_a_setting_that_changes_the_builds_misses(two_runs, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(two_runs[0], cache)
    report = _optimize(tmp_path / "out", cache, "--precision", "int8", "--calibration-method", "entropy")
    assert report["export"]["cached"]                      # same model, same export
    assert _built(report) == {"onnxruntime-int8": False, "openvino-int8": False}


def test_a_corrupted_or_half_deleted_cache_is_rebuilt(two_runs, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(two_runs[0], cache)
    before = _entries(cache)
    ort, = (cache / "entries").glob("build-onnxruntime-int8-*")
    model = ort / "files" / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    ov, = (cache / "entries").glob("build-openvino-int8-" + "?" * 64)      # not build-openvino-int8-bf16-...
    (ov / "meta.json").unlink()
    report = _optimize(tmp_path / "out", cache, "--precision", "int8")
    assert report["export"]["cached"]
    assert _built(report) == {"onnxruntime-int8": False, "openvino-int8": False}
    assert "build-onnxruntime-int8" in " ".join(_entries(cache))   # stored again, whole
    # Under the names the run looked up, so the next run restores every build (the second of two_runs shows
    # that a run restores what the cache holds under its names).
    assert _entries(cache) == before
    assert all(Cache(cache).restore(name, tmp_path / "restored" / name) is not None for name in before)


def test_deleting_the_whole_cache_between_runs_is_fine(two_runs, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(two_runs[0], cache)
    shutil.rmtree(cache)
    report = _optimize(tmp_path / "out", cache, "--precision", "fp32")
    assert not report["export"]["cached"] and not any(_built(report).values())
    assert len(_entries(cache)) == 1 + len(_built(report))


def test_no_cache_writes_nothing(tmp_path, digits):
    report = _optimize(tmp_path / "out", tmp_path / "cache", "--precision", "fp32", "--no-cache")
    assert not (tmp_path / "cache").exists()
    assert report["config"]["cache"] is None and not report["export"]["cached"]


def test_a_rerun_after_a_crash_resumes_from_the_cache(tmp_path, digits):
    cache, out = tmp_path / "cache", tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "edgeml", "optimize", *RUN, "--precision", "int8",
                                "--cache-dir", str(cache), "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(n.startswith("build-") for n in (_entries(cache) if (cache / "entries").is_dir() else [])):
        assert process.poll() is None and time.monotonic() < deadline, "no build was cached before the run ended"
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    kept = {n.removeprefix("build-").rsplit("-", 1)[0] for n in _entries(cache) if n.startswith("build-")}

    report = _optimize(out, cache, "--precision", "int8")
    assert report["export"]["cached"]
    built = _built(report)
    assert kept and {name for name, cached in built.items() if cached} == kept


def test_a_model_whose_code_is_not_in_a_file_is_not_cached(tmp_path):
    import types

    import edgeml

    inline = types.ModuleType("inline_model")           # like a class typed into a notebook
    exec("import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
         "        self.fc = torch.nn.Linear(4, 3)\n    def forward(self, x):\n        return self.fc(x)\n",
         inline.__dict__)
    sys.modules["inline_model"] = inline
    try:
        run = edgeml.optimize(inline.Net(), input_shapes=["x:?x4"], precision="fp32", threads=1, measure_seconds=0.05,
                              out=tmp_path / "out", cache_dir=tmp_path / "cache")
    finally:
        del sys.modules["inline_model"]
    assert any("nothing of this run is cached" in w for w in run.warnings)
    assert not (tmp_path / "cache").exists() and run.config["cache"] is None
