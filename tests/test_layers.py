"""Every import of edgeml's code runs down its layers: the list in README.md's Layout section, read here.

Each .py file of the packages pyproject.toml maps to folders (edgeml/, compress/, targets/, profiles/) is parsed
with `ast`; every `import edgeml.x` and `from edgeml.x import y` in it, at the top or inside a function, must name a
module of the importer's layer or of a lower one. A module's layer is that of the longest name in the list it falls
under (the name itself, or a module below it); `edgeml` stands for the package's `__init__` alone, so a new module
must be given a layer.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "edgeml"


def read_layers(readme: str) -> dict[str, int]:
    """{name: layer} from the numbered list after "Layers, lowest first" in the Layout section."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    listing = section.split("Layers, lowest first", 1)[1]
    layers: dict[str, int] = {}
    number = None
    for line in listing.splitlines():
        item = re.match(r"(\d+)\. ", line)
        if item:
            number = int(item.group(1))
        elif not line.startswith("   ") or number is None:
            if layers:
                break
            continue
        for name in re.findall(r"`([\w.]+)`", line):
            assert name not in layers, f"README.md lists {name} twice"
            layers[name] = number
    return layers


def modules() -> dict[str, Path]:
    """{dotted name: file} of every module, from pyproject.toml's package folders."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    found = {}
    for package, folder in folders.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            found[".".join([package, *parts[:-1]] + ([] if parts[-1] == "__init__" else [parts[-1]]))] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The edgeml modules that module `name` imports: `from X import y` is X.y when that is a module, else X."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: a relative import (edgeml imports by absolute names)"
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    names = [n for n in layers if module == n or (n != PACKAGE and module.startswith(n + "."))]
    return layers[max(names, key=len)] if names else None


def test_every_import_runs_down_the_layers():
    layers = read_layers((ROOT / "README.md").read_text())
    found = modules()
    unplaced = sorted(m for m in found if layer_of(m, layers) is None)
    assert not unplaced, f"modules in no layer of README.md's list: {', '.join(unplaced)}"
    upward = []
    for module, path in sorted(found.items()):
        for imported in sorted(imports(module, path, set(found))):
            low, high = layer_of(module, layers), layer_of(imported, layers)
            if high is None or high > low:
                upward.append(f"{module} -> {imported} (layer {low} -> layer {high})")
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_every_name_in_the_list_is_a_module_or_package():
    layers = read_layers((ROOT / "README.md").read_text())
    found = modules()
    numbers = list(layers.values())
    assert numbers == sorted(numbers) and set(numbers) == set(range(1, max(numbers) + 1)), numbers
    stale = [n for n in layers if not any(m == n or m.startswith(n + ".") for m in found)]
    assert not stale, f"README.md's layers name what is not in the tree: {', '.join(stale)}"
