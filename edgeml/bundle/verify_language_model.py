"""`edgeml verify` of a language-model bundle (edgeml.bundle.language_model): every file's sha256 against the
manifest, no file added, and the reference prompts generated again, greedily, with the bundle's runtime: the answers
must match the ones recorded at build time token for token. A build the device alone runs (a TensorRT engine) is
checked as it was judged at build time: its candidate's runtime here on the weights the engine computes with."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgeml.bundle.folder import Bundle, check_file
from edgeml.bundle.language_model import MANIFEST_VERSION
from edgeml.errors import first_line
from edgeml.runtimes.generation import GENERATION_RUNTIMES

MANIFEST = "manifest.json"


def is_language_model_bundle(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("kind") == "language-model"
    except (OSError, ValueError, AttributeError):
        return False


def verify_language_model(folder: Path, threads: int, result, check) -> None:
    """Append the checks of the bundle in `folder` to `result` (a Verification; `check` makes its Check rows)."""
    manifest = result.manifest
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        result.checks.append(check(MANIFEST, False, f"format {manifest.get('manifest_version')}; this edgeml verifies "
                                                    f"format {MANIFEST_VERSION}: rebuild the bundle"))
        return
    listed = Bundle(folder, manifest).files
    for file in (check_file(folder, f) for f in listed):
        result.checks.append(check(file.path, file.ok, file.detail))
    paths = {f.path for f in listed}
    added = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                   and p.name != MANIFEST and p.relative_to(folder).as_posix() not in paths)
    result.checks += [check(name, False, "not in the manifest") for name in added]
    if not result.passed:
        result.checks.append(check("reference answers", False, "not run: the files differ from the manifest"))
        return
    device = _on_device(manifest)
    runtime = GENERATION_RUNTIMES.get(device.runtime if device else manifest.get("runtime"))
    if runtime is None or runtime.missing():
        result.not_run = (f"{manifest.get('runtime')} is not installed here"
                          + (f" (pip install '{runtime.extra}')" if runtime else ""))
        return
    if device:
        result.checked_with = (f"{manifest['runtime']} runs this build on the device: checked with {runtime.name} on "
                               "the weights its engine computes with, as at build time")
    reference = json.loads((folder / "reference.json").read_text())
    try:
        with tempfile.TemporaryDirectory() as work:
            model = folder / manifest["model"]
            generator = runtime.open(device.on_device.judged(model, Path(work) / "judged") if device else model,
                                     threads)
            answers = [list(generator.stream(ids, reference["max_new_tokens"],
                                             set(manifest["generation"]["eos_token_ids"])))
                       for ids in reference["prompt_ids"]]
    except Exception as e:  # a runtime raises many kinds for a model it cannot load or run
        result.checks.append(check("reference answers", False, f"{runtime.name} failed: {type(e).__name__}: "
                                                               f"{first_line(e)}"))
        return
    same = sum(a[:len(want)] == want for a, want in zip(answers, reference["output_ids"]))
    total = len(reference["output_ids"])
    result.checks.append(check("reference answers", same == total,
                               f"{same}/{total} greedy answers reproduced token for token, {runtime.name} "
                               f"{runtime.version()}"))


def _on_device(manifest: dict):
    """The build (a LanguageModelCandidate) of a bundle the device alone runs, whose answers were made by judging
    its weights here (targets.base.OnDevice); None for a bundle that runs here."""
    from edgeml.targets import TARGETS

    target = TARGETS.get(manifest.get("target"))
    return next((c for c in (target.language_models if target else ()) if c.name == manifest.get("build")
                 and c.on_device and c.on_device.runtime == manifest.get("runtime")), None)
