"""The `Bundle` type (edgeml.bundle.folder): a real bundle folder opened, its manifest checked, its files
checked against the manifest (tampered, missing, added) and its artifact opened and run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeml.bundle.folder import FIELDS, Bundle, has_manifest
from edgeml.bundle.reference import read_reference, relative_error
from edgeml.bundle.write import BATCHING, STANDALONE, run_py
from edgeml.errors import EdgemlError
from edgeml.runtimes import BACKENDS

CPU = ("--target", "cpu", "--precision", "int8", "--quantizer", "ort", "--measure-seconds", "0.05", "--threads", "1")


@pytest.fixture(scope="module")
def built(digits, tmp_path_factory) -> Path:
    """A fresh digits bundle for the CPU (ONNX Runtime INT8), made by `edgeml optimize`."""
    from edgeml.cli import cli

    out = tmp_path_factory.mktemp("folder") / "cpu"
    result = CliRunner().invoke(cli, ["optimize", "--example", "digits", *CPU, "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out / "bundle"


@pytest.fixture
def folder(built, tmp_path) -> Path:
    """A copy of the bundle to change."""
    return Path(shutil.copytree(built, tmp_path / "bundle"))


def rewrite(folder: Path, change) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def problems(bundle: Bundle) -> dict[str, str]:
    return {c.path: c.problem for c in bundle.check_files() + bundle.added_files() if not c.ok}


def test_a_fresh_bundle_opens_and_matches_its_manifest(built):
    bundle = Bundle.open(built, fields=True, current=True)
    assert bundle.folder == built and bundle.path == built / "manifest.json"
    assert bundle.manifest == json.loads((built / "manifest.json").read_text())
    assert bundle.schema_error is None
    assert [f.path for f in bundle.files] == ["model.onnx", "reference.npz", "run.py"]
    assert all(f.size == (built / f.path).stat().st_size and len(f.sha256) == 64 for f in bundle.files)
    assert bundle.entry == "model.onnx" and bundle.backend_name == "onnxruntime"
    assert bundle.runtime is BACKENDS["onnxruntime"]
    checks = bundle.check_files()
    assert [c.path for c in checks] == ["model.onnx", "reference.npz", "run.py"] and all(c.ok for c in checks)
    assert checks[0].detail == f"{(built / 'model.onnx').stat().st_size:,} bytes, sha256 matches"
    assert [c.path for c in bundle.check_files([bundle.entry])] == ["model.onnx"]
    assert bundle.added_files() == []
    assert has_manifest(built) and not has_manifest(built.parent / "nothing")


def test_run_py_is_the_standalone_runner_with_the_batching_code(built):
    """The bundle's run.py, executable: edgeml/bundle/standalone.py with edgeml/batching.py's code in place of its
    import (tests/runtimes/test_registry.py checks that it imports no edgeml)."""
    text = (built / "run.py").read_text()
    assert text == run_py() and (built / "run.py").stat().st_mode & 0o111
    code, standalone = BATCHING.read_text(), STANDALONE.read_text()
    code = code[code.index("class NoBatchAxis("):]
    imported = next(line for line in standalone.splitlines(keepends=True) if line.startswith("from edgeml.batching"))
    assert text.count(code) == 1 and text.replace(code, imported) == standalone and "from edgeml" not in text


def test_opening_names_what_is_not_a_bundle(folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgemlError, match=r"empty is not an edgeml bundle \(no manifest\.json in it\): give OUT/"):
        Bundle.open(tmp_path / "empty")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(EdgemlError, match=r"cannot read .*manifest\.json: Expecting property name"):
        Bundle.open(folder)
    (folder / "manifest.json").write_text("[1, 2]")
    with pytest.raises(EdgemlError, match=r"manifest\.json is not an edgeml bundle manifest$"):
        Bundle.open(folder)


def test_each_command_checks_what_it_relies_on(folder):
    rewrite(folder, lambda m: m.pop("candidate"))
    assert Bundle.open(folder).manifest["entry"] == "model.onnx"           # build-engine reads on
    with pytest.raises(EdgemlError, match=r"not an edgeml bundle manifest \(files, entry, backend or candidate "
                                          r"missing\)$"):
        Bundle.open(folder, fields=True)                                    # ship, profile
    assert FIELDS == ("files", "entry", "backend", "candidate")

    rewrite(folder, lambda m: m.update(candidate="x", format_version=1))
    assert Bundle.open(folder, fields=True).manifest["format_version"] == 1   # a device takes another format
    with pytest.raises(EdgemlError, match=r"has format 1; this edgeml verifies format 3: rebuild the bundle with "
                                          r"`edgeml optimize`$"):
        Bundle.open(folder, current=True)                                   # verify
    rewrite(folder, lambda m: m.update(format="other", format_version=3))
    with pytest.raises(EdgemlError, match=r"manifest\.json is not an edgeml bundle manifest$"):
        Bundle.open(folder, current=True)


def test_a_manifest_that_fails_the_schema(folder):
    original = (folder / "manifest.json").read_text()
    rewrite(folder, lambda m: m["files"][0].update(path="../model.onnx"))
    bundle = Bundle.open(folder, fields=True, current=True)             # opens; verify judges the schema
    assert bundle.schema_error.startswith("does not match its schema at files/0/path: '../model.onnx' does not "
                                          "match")
    for change, error in [(lambda m: m.pop("lineage"), "at (top level): 'lineage' is a required property"),
                          (lambda m: m["backend"].update(name="tflite"), "at backend/name: 'tflite' is not one of")]:
        (folder / "manifest.json").write_text(original)
        rewrite(folder, change)
        assert Bundle.open(folder, current=True).schema_error.startswith(f"does not match its schema {error}")


def test_a_tampered_file(folder):
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.onnx").write_bytes(data)
    with open(folder / "reference.npz", "r+b") as f:
        f.truncate(100)
    with open(folder / "run.py", "a") as f:
        f.write("# more\n")
    bundle = Bundle.open(folder)
    assert problems(bundle) == {"model.onnx": "changed", "reference.npz": "truncated", "run.py": "grown"}
    details = {c.path: c.detail for c in bundle.check_files()}
    assert details["model.onnx"] == "sha256 differs from the manifest's: the content was changed"
    size = bundle.files[1].size
    assert details["reference.npz"] == f"100 bytes, the manifest says {size:,} (truncated)"


def test_a_missing_file_and_a_link(folder):
    (folder / "run.py").unlink()
    (folder / "reference.npz").unlink()
    (folder / "reference.npz").symlink_to(folder.parent / "elsewhere.npz")   # dangling
    (folder / "model.onnx").rename(folder.parent / "model.onnx")
    (folder / "model.onnx").symlink_to(folder.parent / "model.onnx")       # the same bytes, through a link
    assert problems(Bundle.open(folder)) == {"model.onnx": "not a plain file", "reference.npz": "missing",
                                             "run.py": "missing"}


def test_an_added_file(folder):
    (folder / "notes.txt").write_text("added later")
    (folder / "extra").mkdir()
    (folder / "extra" / "labels.txt").write_text("0\n")
    (folder / "model.engine").write_bytes(b"engine")
    bundle = Bundle.open(folder)
    assert problems(bundle) == {"extra/labels.txt": "added", "model.engine": "added", "notes.txt": "added"}
    device = Bundle(folder, {**bundle.manifest, "device_files": ["model.engine", "timing.cache"]})
    engine = next(c for c in device.added_files() if c.path == "model.engine")
    assert engine.ok and engine.detail == "made on the device (see build_engine.sh); not in the manifest"
    assert [c.path for c in device.added_files() if not c.ok] == ["extra/labels.txt", "notes.txt"]


def test_the_artifact_opens_with_its_runtime_and_runs(built):
    bundle = Bundle.open(built, current=True)
    artifact = bundle.artifact()
    assert (artifact.backend, artifact.folder, artifact.entry) == ("onnxruntime", built, "model.onnx")
    assert artifact.precision == bundle.manifest["precision"] == "int8"
    assert artifact.runtime_config == bundle.manifest["runtime_config"]
    inputs, outputs, tolerance = read_reference(built / "reference.npz")
    got = bundle.open_runner(1).run(inputs)
    assert relative_error(got[0], outputs["output"]) <= tolerance
    # Opened with another runtime, on another file (as verify checks a TensorRT bundle without TensorRT).
    other = bundle.open_runner(1, BACKENDS["onnxruntime"], "model.onnx")
    np.testing.assert_allclose(other.run(inputs)[0], got[0], rtol=1e-5, atol=1e-5)
