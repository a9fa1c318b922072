"""What every runtime is: a `Backend` opens a compiled `Artifact` and returns a `Runner` that runs it.

The runtimes (edgeml.runtimes) are separate from the targets (edgeml.targets), which decide which
candidates a device gets and how each is built; one runtime serves several targets.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np


class Runner(Protocol):
    """A loaded model that maps named inputs to the list of outputs, in model order."""

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class Artifact:
    """Files a candidate build produced, in one folder, and how to run them."""
    backend: str
    precision: str
    folder: Path
    entry: str                       # the file the runtime loads
    runtime_config: dict = field(default_factory=dict)
    # the build's attempts, one line each, the one that worked last (onnx_attempts.Outcome.notes)
    notes: tuple[str, ...] = ()

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


@dataclass(frozen=True)
class Backend:
    name: str
    modules: tuple[str, ...]         # import names the backend needs
    extra: str                       # the edgeml extra that installs them
    open: Callable[[Artifact, int], Runner]

    def missing(self) -> list[str]:
        return missing_modules(self.modules)

    def version(self) -> str | None:
        return package_version(self.modules[0])

    @property
    def install(self) -> str:
        """How to get the runtime: `pip install '...'` for an edgeml extra or a pip package, else `extra` as it
        reads (a runtime that comes with the device or a hardware-specific build)."""
        return self.extra if " " in self.extra else f"pip install '{self.extra}'"


class Package(NamedTuple):
    """A package edgeml imports, as pip installs it and as `edgeml doctor` lists it."""
    pip: str                         # the distribution's name on PyPI
    module: str                      # its import name
    extra: str                       # what installs it: "edgeml", an extra ("edgeml[cpu]") or, for runtimes that
                                     # only a device has, how to get it there (Backend.extra)


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules that are not installed (found without importing them: some print on import)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """Module name to the pip packages that provide it (a scan of every installed package: done once)."""
    return importlib.metadata.packages_distributions()


def package_version(module: str) -> str | None:
    """The installed version of the package that provides `module`, or None."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    distributions = _distributions().get(module)      # e.g. mlflow from mlflow-skinny
    if distributions:
        return importlib.metadata.version(distributions[0])
    try:
        return getattr(importlib.import_module(module), "__version__", None)
    except ImportError:
        return None
