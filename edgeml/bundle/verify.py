"""`edgeml verify BUNDLE`: is a bundle (a folder, or a .tar.gz from `edgeml pack`) what its manifest says,
and does it still compute what it computed at build time?

In order: the manifest against manifest.schema.json; every listed file's size and sha256; files that
are not listed (besides those a device step adds, `device_files`); then the reference vectors, run
with the bundle's runtime when it is installed here. A TensorRT bundle where TensorRT is missing is
checked like at build time: with the backend that gave its reference outputs, on the same model.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeml.bundle.pack import extract
from edgeml.bundle.reference import read_reference, relative_error
from edgeml.bundle.write import FORMAT_VERSION, MANIFEST, load_manifest, schema
from edgeml.errors import EdgemlError, first_line
from edgeml.hashing import sha256_file
from edgeml.inputs.data import Dataset
from edgeml.measure.evaluate import predict
from edgeml.runtimes import BACKENDS
from edgeml.runtimes.base import Artifact

BATCH = 32          # reference inputs per call for models with a symbolic batch dimension


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Verification:
    bundle: Path
    manifest: dict
    checks: list[Check] = field(default_factory=list)
    not_run: str | None = None          # why the reference vectors could not run here
    checked_with: str | None = None     # the backend that ran them, when not the bundle's own

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def verify(path: Path, threads: int | None = None) -> Verification:
    """Verify the bundle folder or archive at `path`; raises EdgemlError when it is not a usable bundle."""
    path = Path(path)
    threads = threads or os.cpu_count() or 1
    if path.is_dir():
        return _verify_folder(path, threads)
    if not path.is_file():
        raise EdgemlError(f"{path} does not exist: give a bundle folder or a .tar.gz made by `edgeml pack`")
    with tempfile.TemporaryDirectory(prefix="edgeml-verify-") as tmp:
        result = _verify_folder(extract(path, Path(tmp)), threads)
    result.bundle = path
    return result


def _verify_folder(folder: Path, threads: int) -> Verification:
    manifest = _read_manifest(folder)
    result = Verification(folder, manifest)
    error = _schema_error(manifest)
    result.checks.append(Check(MANIFEST, error is None, error or f"format {FORMAT_VERSION}, valid against its schema"))
    if error is not None:
        return result
    result.checks += _file_checks(folder, manifest)
    if not result.passed:
        result.checks.append(Check("reference vectors", False, "not run: the files differ from the manifest"))
        return result
    _run_reference(folder, manifest, threads, result)
    return result


def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    manifest = load_manifest(folder)
    if manifest.get("format") != "edgeml-bundle":
        raise EdgemlError(f"{path} is not an edgeml bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise EdgemlError(f"{path} has format {manifest.get('format_version')}; this edgeml verifies format "
                          f"{FORMAT_VERSION}: rebuild the bundle with `edgeml optimize`")
    return manifest


def _schema_error(manifest: dict) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(schema()).iter_errors(manifest))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"does not match its schema at {where}: {first_line(error)}"


def _file_checks(folder: Path, manifest: dict) -> list[Check]:
    checks = []
    for entry in manifest["files"]:
        path = folder / entry["path"]
        if path.is_symlink() or not path.is_file():
            checks.append(Check(entry["path"], False, "missing" if not path.exists() else "not a plain file"))
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            checks.append(Check(entry["path"], False, f"{size:,} bytes, the manifest says {entry['size']:,} "
                                                      f"({'truncated' if size < entry['size'] else 'grown'})"))
        elif sha256_file(path) != entry["sha256"]:
            checks.append(Check(entry["path"], False, "sha256 differs from the manifest's: the content was changed"))
        else:
            checks.append(Check(entry["path"], True, f"{size:,} bytes, sha256 matches"))
    listed = {entry["path"] for entry in manifest["files"]} | {MANIFEST}
    device = set(manifest["device_files"])
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if relative in listed or (path.is_dir() and not path.is_symlink()):
            continue
        if relative in device:
            checks.append(Check(relative, True, "made on the device (see build_engine.sh); not in the manifest"))
        else:
            checks.append(Check(relative, False, "not in the manifest: added after the bundle was made"))
    return checks


def _run_reference(folder: Path, manifest: dict, threads: int, result: Verification) -> None:
    name, entry = manifest["backend"]["name"], manifest["entry"]
    backend = BACKENDS[name]
    made = manifest["reference"]["outputs_from"]
    if backend.missing():
        other = BACKENDS.get(made["backend"])
        if other is None or other is backend or other.missing():
            result.not_run = f"{name} is not installed here (pip install '{backend.extra}')"
            return
        backend, entry = other, made["entry"]
        result.checked_with = (f"{name} is not installed here: checked with {other.name} on {entry}, as at build "
                               "time; the device runs the same model file")
    inputs, expected, _ = read_reference(folder / manifest["reference"]["file"])
    tolerance = manifest["reference"]["tolerance"]
    first = manifest["inputs"][0]["shape"]
    fixed = bool(first) and isinstance(first[0], int)      # a model with a fixed batch size
    try:
        runner = backend.open(Artifact(name, manifest["precision"], folder, entry, manifest["runtime_config"]), threads)
        outputs = predict(runner, Dataset(inputs, None, "reference vectors"), first[0] if fixed else BATCH, fixed)
    except Exception as e:  # the runtimes raise many kinds for a model they cannot load or run
        result.checks.append(Check("reference vectors", False, f"{backend.name} failed: {type(e).__name__}: "
                                                               f"{first_line(e)}"))
        return
    got = dict(zip([spec["name"] for spec in manifest["outputs"]], outputs))
    for output, want in expected.items():
        error = relative_error(got.get(output), want)
        result.checks.append(Check(f"reference {output}", error <= tolerance,
                                   f"max error {error:.3g} of its range (tolerance {tolerance:g}), {len(want)} "
                                   f"samples, {backend.name} {backend.version()} on {entry}"))
