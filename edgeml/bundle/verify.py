"""`edgeml verify BUNDLE`: is a bundle (a folder, or a .tar.gz from `edgeml pack`) what its manifest says,
and does it still compute what it computed at build time?

In order: the manifest against manifest.schema.json; every listed file's size and sha256; files that
are not listed (besides those a device step adds, `device_files`); then the reference vectors, run
with the bundle's runtime when it is installed here. A TensorRT bundle where TensorRT is missing is
checked like at build time: with the backend that gave its reference outputs, on the same model.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeml.batching import batch_axes, model_batch, to_samples
from edgeml.bundle.folder import FORMAT_VERSION, MANIFEST, Bundle
from edgeml.bundle.pack import extract
from edgeml.bundle.reference import read_reference, relative_error
from edgeml.bundle.verify_language_model import is_language_model_bundle, verify_language_model
from edgeml.errors import EdgemlError, first_line
from edgeml.inputs.data import Dataset
from edgeml.measure.evaluate import predict
from edgeml.runtimes import BACKENDS

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
    if is_language_model_bundle(folder):
        result = Verification(folder, json.loads((folder / MANIFEST).read_text()))
        verify_language_model(folder, threads, result, Check)
        return result
    bundle = Bundle.open(folder, current=True)
    result = Verification(folder, bundle.manifest)
    error = bundle.schema_error
    result.checks.append(Check(MANIFEST, error is None, error or f"format {FORMAT_VERSION}, valid against its schema"))
    if error is not None:
        return result
    result.checks += [Check(c.path, c.ok, c.detail) for c in bundle.check_files() + bundle.added_files()]
    if not result.passed:
        result.checks.append(Check("reference vectors", False, "not run: the files differ from the manifest"))
        return result
    _run_reference(bundle, threads, result)
    return result


def _run_reference(bundle: Bundle, threads: int, result: Verification) -> None:
    manifest, name, entry = bundle.manifest, bundle.backend_name, bundle.entry
    backend = bundle.runtime
    made = manifest["reference"]["outputs_from"]
    if backend.missing():
        other = BACKENDS.get(made["backend"])
        if other is None or other is backend or other.missing():
            result.not_run = f"{name} is not installed here ({backend.install})"
            return
        backend, entry = other, made["entry"]
        result.checked_with = (f"{name} is not installed here: checked with {other.name} on {entry}, as at build "
                               "time; the device runs the same model file")
    inputs, expected, _ = read_reference(bundle.folder / manifest["reference"]["file"])
    tolerance = manifest["reference"]["tolerance"]
    axes = batch_axes(manifest["inputs"])
    batch = model_batch([spec["shape"] for spec in manifest["inputs"]],
                        [axes.get(spec["name"], 0) for spec in manifest["inputs"]])
    try:
        runner = bundle.open_runner(threads, backend, entry)
        vectors = Dataset(to_samples(inputs, axes), None, "reference vectors", axes=axes)
        outputs = predict(runner, vectors, batch or BATCH, batch is not None)
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
