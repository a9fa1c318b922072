"""Conformance of every quantizer in the registry (edgeml.compress.quantize.QUANTIZERS) and of every pass's
capability record (a `SUPPORTS` of edgeml.compress) with what reads them.

Each registered quantizer follows the `Quantizer` protocol and has the functions its record promises; its record
names runtimes of edgeml.runtimes.BACKENDS, precisions and candidates of the targets, and the extra of pyproject.toml
that installs its modules; the candidates that quantize name it, and the README's table of quantizers agrees. Each
quantizer that runs here quantizes a tiny model through the first candidate that names it, which its runtime runs
close to PyTorch; those that cannot run here (not installed) are skipped with the reason. A new quantizer needs no
change here.
"""

import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

import numpy as np
import pytest
from extras import extras as pip_extras
from tiny_model import tiny_model

import edgeml.compress
from edgeml.compress.base import Supports
from edgeml.compress.quantize import QUANTIZERS, Calibration, Int8Config, Quantizer, WeightOnlyConfig, qat
from edgeml.inputs.data import Dataset
from edgeml.runtimes import BACKENDS, PACKAGES
from edgeml.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NAMES = list(QUANTIZERS)
CANDIDATES = [(target, c) for target in TARGETS.values() for c in target.candidates]
PRECISIONS = {c.precision for _, c in CANDIDATES}
INPUTS = ("onnx", "torch")
LOWER_PRECISION_ERROR = 0.1      # a quantized build's output against PyTorch's (relative to the output's range)
ABILITIES = {"dynamic": "dynamic", "weight_only": "run_weight_only", "accuracy_control": "run_with_accuracy_control"}


def _records() -> dict[str, Supports]:
    """Every `SUPPORTS` of a module of edgeml.compress, by its name."""
    found: dict[str, Supports] = {}
    for info in pkgutil.walk_packages(edgeml.compress.__path__, "edgeml.compress."):
        record = getattr(importlib.import_module(info.name), "SUPPORTS", None)
        if record is not None:
            assert isinstance(record, Supports), f"{info.name}.SUPPORTS is a {type(record).__name__}, not a Supports"
            assert found.setdefault(record.name, record) is record, f"two passes are named '{record.name}'"
    return found


RECORDS = _records()


def naming(name: str) -> list:
    return [(target, c) for target, c in CANDIDATES if c.quantizer == name]


@pytest.mark.parametrize("name", NAMES)
def test_follows_the_protocol(name):
    """A module `<tool>_backend.py` with its record and static INT8: `run(model, ..., calibration, config)`."""
    backend = QUANTIZERS[name]
    assert isinstance(backend, Quantizer) and backend.__name__.endswith("_backend"), backend
    assert isinstance(backend.SUPPORTS, Supports) and backend.SUPPORTS.name == name
    parameters = list(inspect.signature(backend.run).parameters.values())
    assert parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, parameters[0]
    hints = typing.get_type_hints(backend.run)
    assert hints.get("calibration") is Dataset and hints.get("config") is Int8Config, hints
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    assert all(p.kind in keywords for p in parameters if p.name in ("calibration", "config"))


@pytest.mark.parametrize("name", NAMES)
def test_has_a_function_for_each_ability_it_declares(name):
    """dynamic -> `dynamic`, weight_only -> `run_weight_only` (taking a WeightOnlyConfig, making int<bits>),
    accuracy_control -> `run_with_accuracy_control`; and none of them where the record does not declare it."""
    backend, supports = QUANTIZERS[name], QUANTIZERS[name].SUPPORTS
    for ability, function in ABILITIES.items():
        assert bool(getattr(supports, ability)) == callable(getattr(backend, function, None)), (ability, function)
    if supports.dynamic:
        assert typing.get_type_hints(backend.dynamic).get("config") is Int8Config
    if supports.weight_only:
        assert typing.get_type_hints(backend.run_weight_only).get("config") is WeightOnlyConfig
        assert {f"int{bits}" for bits in supports.weight_only} <= set(supports.precisions)
    if supports.accuracy_control:
        hints = typing.get_type_hints(backend.run_with_accuracy_control)
        assert hints.get("calibration") is Dataset and hints.get("config") is Int8Config


@pytest.mark.parametrize("name", NAMES)
def test_its_calibrations_are_int8_settings(name):
    """Each alternative changes fields of Int8Config (a field it does not have is an error here, not in a search),
    each one differently, and a calibration method it names is one the quantizer reads."""
    supports = QUANTIZERS[name].SUPPORTS
    assert all(isinstance(c, Calibration) for c in supports.calibrations)
    applied = [c.applied(Int8Config()) for c in supports.calibrations]
    assert Int8Config() not in applied and len(set(applied)) == len(applied)
    assert len({c.name for c in supports.calibrations}) == len(supports.calibrations)
    methods = {dict(c.settings)["calibration_method"] for c in supports.calibrations
               if "calibration_method" in dict(c.settings)}
    assert methods <= set(supports.calibration_methods), methods


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_its_record_names_real_runtimes_and_precisions(name):
    supports = RECORDS[name]
    assert supports.input in INPUTS
    assert set(supports.runtimes) <= set(BACKENDS), set(supports.runtimes) - set(BACKENDS)
    assert set(supports.precisions) <= PRECISIONS, set(supports.precisions) - PRECISIONS
    if name in QUANTIZERS:
        assert supports.runtimes and supports.precisions


def test_every_quantizing_candidate_names_a_registered_quantizer():
    """A candidate in an integer precision names its quantizer, one of the registry, that builds for its runtime and
    precision; it needs the quantizer's modules and offers the quantizer's calibrations (or none) and its accuracy
    control only where the quantizer has one. A float candidate names none (a cast is no quantization)."""
    wrong = []
    for target, c in CANDIDATES:
        where = f"{target.name}/{c.name}"
        if (c.quantizer is not None) != c.precision.startswith("int"):
            wrong.append(f"{where}: {c.precision} with quantizer {c.quantizer}")
            continue
        if c.quantizer is None:
            continue
        if c.quantizer not in QUANTIZERS:
            wrong.append(f"{where}: quantizer '{c.quantizer}' is not registered ({', '.join(QUANTIZERS)})")
            continue
        supports = QUANTIZERS[c.quantizer].SUPPORTS
        if c.backend.name not in supports.runtimes or c.precision not in supports.precisions:
            wrong.append(f"{where}: {c.quantizer} does not declare {c.backend.name} {c.precision}")
        if not set(supports.modules) <= set(c.needs):
            wrong.append(f"{where}: needs {c.needs}, not all of {c.quantizer}'s {supports.modules}")
        if c.calibrations not in ((), supports.calibrations):
            wrong.append(f"{where}: calibrations other than {c.quantizer}'s")
        if c.accuracy_control is not None and not supports.accuracy_control:
            wrong.append(f"{where}: an accuracy control that {c.quantizer} does not declare")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", NAMES)
def test_a_candidate_uses_each_runtime_and_precision_it_declares(name):
    """The record claims nothing that no target builds (a candidate naming it for each runtime and precision)."""
    supports = QUANTIZERS[name].SUPPORTS
    assert {c.backend.name for _, c in naming(name)} == set(supports.runtimes)
    assert {c.precision for _, c in naming(name)} == set(supports.precisions)
    offered = [c.calibrations for _, c in naming(name) if c.calibrations]
    assert bool(offered) == bool(supports.calibrations)


def test_quantization_aware_candidates_are_those_qat_builds_for():
    aware = [c for _, c in CANDIDATES if c.quantization_aware]
    assert {c.backend.name for c in aware} == set(qat.SUPPORTS.runtimes)
    assert {c.precision for c in aware} == set(qat.SUPPORTS.precisions)


def test_pruning_kinds_are_those_the_prune_command_offers():
    from edgeml.cli import cli
    from edgeml.pipeline import single_pass

    method = next(p for p in cli.commands["prune"].params if p.name == "method")
    assert RECORDS["prune"].kinds == single_pass.METHODS == tuple(method.type.choices)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_names_the_extra_that_installs_it(name):
    """`extra` is an extra of pyproject.toml that installs each of its modules; a quantizer's modules are also among
    the packages `edgeml doctor` lists (edgeml.runtimes.PACKAGES), with that extra."""
    supports, extras = RECORDS[name], pip_extras()
    listed = {p.module: p for p in PACKAGES}
    assert supports.extra in extras, f"{name}: {supports.extra} is not an extra of pyproject.toml"
    pip = {m: listed[m].pip if m in listed else m.replace("_", "-") for m in supports.modules}
    assert set(pip.values()) <= extras[supports.extra], (name, supports.extra, pip)
    if name in QUANTIZERS:
        for module in supports.modules:
            assert module in listed and listed[module].extra == supports.extra, (name, module, listed.get(module))


def _readme_quantizers() -> list[list[str]]:
    """The rows of the README's table of quantizers, one list of cells each."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("| quantizer | quantizes |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip().startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_readme_lists_every_quantizer():
    """The README's table: each quantizer, in the registry's order, what it starts from, its runtimes, precisions and
    extra."""
    rows = _readme_quantizers()
    assert [row[0].strip("`") for row in rows] == NAMES
    for name, quantizes, runtimes, precisions, extra in rows:
        supports = QUANTIZERS[name.strip("`")].SUPPORTS
        assert {"onnx": "the ONNX model", "torch": "the PyTorch model"}[supports.input] in quantizes, name
        assert runtimes.split(", ") == list(supports.runtimes), name
        assert precisions.split(", ") == list(supports.precisions), name
        assert extra == ("(none)" if supports.extra == "edgeml" else f"`{supports.extra[7:-1]}`"), name


def test_the_readme_layout_names_every_quantizer_module():
    layout = README.read_text().split("## Layout", 1)[1].split("```", 2)[1]
    for backend in QUANTIZERS.values():
        assert backend.__name__.rsplit(".", 1)[1] in layout, backend.__name__


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    return tiny_model(tmp_path_factory.mktemp("tiny"), 32)


@pytest.mark.parametrize("name", NAMES)
def test_quantizes_a_tiny_model(name, tiny):
    """The first candidate naming the quantizer that runs here builds the tiny model in its precision, and its
    runtime runs it within LOWER_PRECISION_ERROR of PyTorch."""
    reasons = []
    for target, candidate in naming(name):
        missing = candidate.missing()
        why = f"{', '.join(missing)} not installed" if missing else (target.elsewhere() if target.elsewhere else None)
        why = why or (candidate.applies(tiny["onnx"]) if candidate.applies else None)
        if why:
            reasons.append(f"{target.name}/{candidate.name}: {why}")
            continue
        artifact = candidate.build(tiny["onnx"], tiny["folder"] / candidate.name, tiny["context"])
        assert artifact.backend == candidate.backend.name and artifact.precision == candidate.precision
        outputs = BACKENDS[artifact.backend].open(artifact, 1).run(tiny["feeds"])
        output, reference = np.asarray(outputs[0], dtype=np.float64), tiny["reference"]
        assert output.shape == reference.shape
        assert np.abs(output - reference).max() / np.abs(reference).max() <= LOWER_PRECISION_ERROR
        return
    pytest.skip(f"no candidate of quantizer {name} runs here: " + "; ".join(reasons))
