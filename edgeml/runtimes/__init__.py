"""Runtimes: how to open and run an artifact (ONNX Runtime, OpenVINO, PyTorch, LiteRT, TensorRT, and the CUDA
ones), apart from the targets (edgeml.targets) that decide which candidates a device gets.

`BACKENDS` is the one registry of them, by the name an artifact's manifest gives: every `Backend` that a
module of this package defines at its top level, so a file here is a runtime. What else names runtimes
derives from it: the packages `edgeml doctor` lists and a run records (`PACKAGES`, `RECORDED`), the backend
names the bundle manifest's schema allows (`manifest_schema_backends`). A new runtime is its module here (a
Backend whose `extra` installs its modules), its candidates in a target (edgeml.targets), its opener in the
bundle's standalone run.py (edgeml/bundle/standalone.py) and, for a new extra, pyproject.toml;
tests/runtimes/test_registry.py checks every registered runtime against all of them.
"""

from __future__ import annotations

import importlib
import pkgutil

from edgeml.runtimes.base import Backend, Package
from edgeml.runtimes.generation import GENERATION_RUNTIMES


def _registered() -> dict[str, Backend]:
    """Every Backend defined at the top level of a module of this package, by name (in name order)."""
    found: dict[str, Backend] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Backend) and found.setdefault(value.name, value) is not value:
                raise RuntimeError(f"two runtimes are named '{value.name}' (one in {module.__name__})")
    return dict(sorted(found.items()))


BACKENDS: dict[str, Backend] = _registered()

# What the pipeline imports whatever the runtime: PyTorch models and their export, ONNX graph passes.
PIPELINE = (Package("torch", "torch", "edgeml"), Package("onnx", "onnx", "edgeml"))
# What builds a runtime's artifacts here, installed with it (by its Backend.extra): runtime -> (pip, module).
TOOLS: dict[str, tuple[tuple[str, str], ...]] = {
    "openvino": (("nncf", "nncf"),),
    "litert": (("ai-edge-quantizer", "ai_edge_quantizer"), ("litert-torch", "litert_torch")),
    "torch": (("neural-compressor-pt", "neural_compressor"),),
}
# Not runtimes: `edgeml sweep` (Ray), `edgeml serve` (FastAPI on uvicorn, Prometheus' client), --track mlflow.
COMMANDS = (Package("ray", "ray", "edgeml[scale]"), Package("fastapi", "fastapi", "edgeml[serve]"),
            Package("uvicorn", "uvicorn", "edgeml[serve]"),
            Package("prometheus-client", "prometheus_client", "edgeml[serve]"))
TRACKING = (Package("mlflow-skinny", "mlflow", "edgeml[track]"),)
PIP_NAMES = {"llama_cpp": "llama-cpp-python"}       # where a pip name is not the import name with "-" for "_"


def _pip(module: str) -> str:
    return PIP_NAMES.get(module, module.replace("_", "-"))


def _install_order(package: Package) -> tuple[int, str]:
    """edgeml's own packages, then its extras' (in name order, as pyproject.toml lists them), then what only
    a device has."""
    if package.extra == "edgeml":
        return 0, ""
    return (1, package.extra) if package.extra.startswith("edgeml[") else (2, "")


def _packages() -> tuple[Package, ...]:
    rows = list(PIPELINE)
    for backend in BACKENDS.values():
        rows += [Package(_pip(module), module, backend.extra) for module in backend.modules]
        rows += [Package(pip, module, backend.extra) for pip, module in TOOLS.get(backend.name, ())]
    rows += [Package(_pip(module), module, runtime.extra) for runtime in GENERATION_RUNTIMES.values()
             for module in runtime.modules]
    rows += COMMANDS + TRACKING
    first: dict[str, Package] = {}
    for row in sorted(rows, key=_install_order):       # a module two runtimes use is listed once, by its
        first.setdefault(row.module, row)              # first install (torch by edgeml, not its CUDA build)
    return tuple(first.values())


PACKAGES: tuple[Package, ...] = _packages()
"""Every package of the runtimes and the tools that build for them, once each, with what installs it:
what `edgeml doctor` lists, in its order."""

RECORDED: tuple[str, ...] = tuple(p.module for p in PACKAGES if p.extra in ("edgeml", "edgeml[cpu]")) + ("numpy",)
"""The import names whose versions every run records (report.json "packages", and the cache keys of builds,
which add each candidate's own): edgeml's packages and those of its [cpu] extra (the default target), and
numpy."""


def manifest_schema_backends() -> list[str]:
    """The backend names a bundle manifest may give (manifest.schema.json's backend/name enum), sorted."""
    return sorted(BACKENDS)
