"""Conformance of every runtime in the registry (edgeml.runtimes.BACKENDS) with what derives from it.

Each registered runtime that runs here builds a tiny real artifact with the first candidate of a target that
uses it and suits the model, opens and runs it through `Backend.open` and through the opener of the bundle's
standalone run.py (edgeml.bundle.write.run_py); runtimes that cannot run here (not installed, no CUDA GPU) are
skipped with the reason. Every runtime is in the manifest schema's backend names, names an extra that
installs it, and imports where it is installed. A new runtime needs no change here.
"""

import ast
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from extras import extras as pip_extras
from tiny_model import tiny_model

from edgeml.bundle.write import run_py
from edgeml.runtimes import BACKENDS, PACKAGES, TOOLS, manifest_schema_backends
from edgeml.runtimes.generation import GENERATION_RUNTIMES
from edgeml.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "edgeml" / "bundle" / "manifest.schema.json"
NAMES = sorted(BACKENDS)
SAME_ARTIFACT = 1e-5       # run.py against Backend.open on the same artifact (relative to the output's range)
FP32_ERROR = 1e-3          # an FP32 artifact against the PyTorch model
LOWER_PRECISION_ERROR = 0.1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    return tiny_model(tmp_path_factory.mktemp("tiny"), 16) | {"built": {}}


def build(name: str, tiny: dict):
    """(candidate, artifact) of runtime `name` for the tiny model, built once; skips when it cannot run here."""
    if name in tiny["built"]:
        return tiny["built"][name]
    backend = BACKENDS[name]
    missing = backend.missing()
    if missing:
        pytest.skip(f"{', '.join(missing)} is not installed: the {name} runtime comes with {backend.extra}")
    reasons = []
    for target in TARGETS.values():
        for candidate in target.candidates:
            if candidate.backend is not backend or candidate.missing():
                continue
            why = target.elsewhere() if target.elsewhere else None
            why = why or (candidate.applies(tiny["onnx"]) if candidate.applies else None)
            if why:
                reasons.append(f"{target.name}/{candidate.name}: {why}")
                continue
            artifact = candidate.build(tiny["onnx"], tiny["folder"] / candidate.name, tiny["context"])
            tiny["built"][name] = candidate, artifact
            return candidate, artifact
    pytest.skip(f"no candidate of the {name} runtime runs here: " + ("; ".join(reasons) or "no target uses it"))


def run_py_module(folder: Path):
    """The bundle's run.py written into `folder` and imported as a module of its own, as a bundle's run.py is."""
    (folder / "run.py").write_text(run_py())
    spec = importlib.util.spec_from_file_location("edgeml_bundle_run_py", folder / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    assert output.shape == reference.shape, (output.shape, reference.shape)
    return float(np.abs(output.astype(np.float64) - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name", NAMES)
def test_opens_and_runs_its_artifact(name, tiny):
    candidate, artifact = build(name, tiny)
    assert artifact.backend == name and (artifact.folder / artifact.entry).is_file()
    outputs = BACKENDS[name].open(artifact, 1).run(tiny["feeds"])
    assert len(outputs) == 1
    fp32 = (candidate.computes_in or candidate.precision) == "fp32"
    assert relative_error(np.asarray(outputs[0]), tiny["reference"]) <= (FP32_ERROR if fp32 else
                                                                         LOWER_PRECISION_ERROR)


@pytest.mark.parametrize("name", NAMES)
def test_the_bundles_run_py_opens_and_runs_it(name, tiny, monkeypatch, tmp_path):
    candidate, artifact = build(name, tiny)
    expected = BACKENDS[name].open(artifact, 1).run(tiny["feeds"])
    standalone = run_py_module(tmp_path)
    monkeypatch.setattr(standalone, "HERE", artifact.folder)     # a bundle's run.py reads the files beside it
    if name == "tensorrt":         # a TensorRT bundle runs the engine its build_engine.sh builds on the device
        from edgeml.runtimes.tensorrt import build_plan

        (artifact.folder / standalone.ENGINE).write_bytes(build_plan(artifact))
    backend = BACKENDS[name]
    manifest = {"backend": {"name": name, "version": backend.version(),
                            "requires": {backend.modules[0]: backend.version(), "numpy": np.__version__}},
                "entry": artifact.entry, "runtime_config": artifact.runtime_config,
                "inputs": [{"name": "input"}], "outputs": [{"name": "output"}]}
    outputs = standalone.open_model(manifest, 1)(tiny["feeds"])
    assert len(outputs) == len(expected) == 1
    assert relative_error(np.asarray(outputs[0]), np.asarray(expected[0])) <= SAME_ARTIFACT


def _run_py_openers() -> set[str]:
    """The backend names of run.py's `openers` table."""
    for node in ast.walk(ast.parse(run_py())):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "openers" for t in node.targets):
            return {ast.literal_eval(key) for key in node.value.keys}
    raise AssertionError("run.py has no `openers` table")


def test_run_py_opens_exactly_the_registered_runtimes():
    assert _run_py_openers() == set(BACKENDS)


def test_run_py_stands_alone():
    """run.py travels in every bundle without edgeml: at its top level, the standard library and numpy only."""
    tree = ast.parse(run_py())
    imported = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {"numpy"} <= set(sys.stdlib_module_names), imported
    everywhere = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    everywhere |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in everywhere if m.split(".")[0] == "edgeml"}


@pytest.mark.parametrize("name", NAMES)
def test_in_the_manifest_schema(name):
    assert name in manifest_schema_backends()


def test_the_manifest_schema_takes_its_backend_names_from_the_registry():
    """One source: manifest.schema.json has no list of its own; the schema edgeml checks with adds the
    registry's (edgeml.runtimes.manifest_schema_backends)."""
    from edgeml.bundle.folder import schema

    assert "enum" not in json.loads(SCHEMA.read_text())["properties"]["backend"]["properties"]["name"]
    assert schema()["properties"]["backend"]["properties"]["name"]["enum"] == manifest_schema_backends() == NAMES



@pytest.mark.parametrize("name", NAMES)
def test_names_the_extra_that_installs_it(name):
    """`Backend.extra` is "edgeml" (its dependencies) or "edgeml[NAME]", an extra of pyproject.toml, that
    installs each of its modules (by the pip name edgeml.runtimes.PACKAGES gives them); or, for a runtime pip
    cannot install through edgeml (it comes with the device or a hardware-specific build: TensorRT, CUDA
    builds of torch, onnxruntime-gpu), words that are no edgeml extra and name the package it comes in."""
    backend = BACKENDS[name]
    pip = {p.module: p.pip for p in PACKAGES}
    if backend.extra.startswith("edgeml"):
        extras = pip_extras()
        assert backend.extra in extras, f"{name}: {backend.extra} is not an extra of pyproject.toml"
        assert {pip[m] for m in backend.modules} <= extras[backend.extra], (name, backend.extra)
    else:
        assert all(m.replace("_", "-") in backend.extra.lower() for m in backend.modules), (name, backend.extra)


@pytest.mark.parametrize("name", NAMES)
def test_its_install_hint_quotes_only_a_requirement(name):
    """What edgeml prints for a runtime that is not installed (`Backend.install`): `pip install '<extra or
    package>'` where pip installs it, else the words of `extra` as they are (TensorRT, CUDA builds), never words
    quoted as if they were one pip requirement."""
    hint = BACKENDS[name].install
    quoted = re.findall(r"pip install '([^']*)'", hint)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+(\[[A-Za-z0-9,_-]+\])?", q) for q in quoted), hint
    assert quoted or hint == BACKENDS[name].extra
    if name == "tensorrt":
        assert hint == "TensorRT: JetPack on a Jetson, `pip install tensorrt` on a GPU host"


@pytest.mark.parametrize("name", NAMES)
def test_its_modules_import_where_installed(name):
    backend = BACKENDS[name]
    if backend.missing():
        pytest.skip(f"{', '.join(backend.missing())} is not installed: the {name} runtime comes with {backend.extra}")
    for module in backend.modules:
        importlib.import_module(module)


def test_packages_list_every_runtime_and_its_tools_once():
    modules = [p.module for p in PACKAGES]
    assert len(modules) == len(set(modules))
    assert {m for b in BACKENDS.values() for m in b.modules} <= set(modules)
    assert {m for r in GENERATION_RUNTIMES.values() for m in r.modules} <= set(modules)
    for name, tools in TOOLS.items():
        assert name in BACKENDS, name
        needed = {m for t in TARGETS.values() for c in t.candidates if c.backend.name == name for m in c.needs}
        assert {module for _, module in tools} <= needed, (name, tools)       # no tool that nothing uses
