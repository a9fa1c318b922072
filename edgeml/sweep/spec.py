"""SWEEP.yaml: models x targets x recipes, read and checked whole before anything is scheduled.

    models:                        # name -> what `optimize` is given (paths relative to this file)
      digits: {example: digits}
      mynet: {model: nets/mynet.onnx, calib_data: calib.npz, eval_data: eval.npz}
      mylm: {model: lms/my-llama/, calib_data: notes/, eval_data: docs/}   # a causal LM: folder or .gguf, text
    targets:                       # a name, or {target: NAME, profile: P} / {target: NAME, profiles: [P, ...]}
      - cpu
      - {target: jetson, profiles: [jetson-orin-nano, jetson-orin-nx]}
    recipes:                       # a list of named recipes ...
      - {name: int8, precision: int8}
      - {name: mine, recipe: my-recipe.yaml, max_accuracy_drop: 0.005, max_ppl_increase: 0.03}
    # ... or a grid over recipe keys:  recipes: {grid: {precision: [int8, fp32], calibration_method: [minmax, entropy]}}
    settings: {threads: 1, measure_seconds: 0.5}    # recipe settings every cell shares
    cache_dir: /shared/edgeml-cache                 # the build cache, at a path every node reaches

A cell is one `optimize` run: (model, target, profile, recipe). Unknown keys, missing files and a cell that
cannot run (a target without the recipe's precision, a profile of another target, an ONNX model for a target
that converts PyTorch models) are one-line errors here.

A model whose `model` is a causal language model (a Hugging Face folder or a GGUF file, as `optimize` tells them
apart) makes language-model cells: they take `model`, `calib_data` and `eval_data` (text: a .txt file or a folder
of them) only, the `llm` extra, and a target with language-model builds in the recipe's precision. They take a
device profile only where those builds run on the device alone (their speed is predicted for it): builds timed on
the node would ignore it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeml.errors import EdgemlError, first_line
from edgeml.inputs.language_model import is_language_model
from edgeml.pipeline.recipe import Recipe, load_recipe, make_recipe, parse_settings

TOP_KEYS = ("models", "targets", "recipes", "settings", "cache_dir")
MODEL_KEYS = ("model", "example", "weights", "input_shape", "data", "split", "calib_data", "eval_data",
              "train_data", "preprocess")
MODEL_PATHS = ("weights", "data", "calib_data", "eval_data", "train_data")
LANGUAGE_MODEL_KEYS = ("model", "calib_data", "eval_data")
TARGET_KEYS = ("target", "profile", "profiles")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=,+-]*")


class SweepError(EdgemlError):
    """A SWEEP.yaml that cannot be run as written."""


@dataclass(frozen=True)
class Cell:
    """One `optimize` run of the sweep."""
    model: str
    target: str
    profile: str | None               # None: the target's default profile
    recipe: str
    given: dict                       # optimize's model and data arguments
    settings: dict                    # the recipe's settings as YAML gives them, target and profile included
    language_model: bool = False      # the model is a causal language model (optimize's language-model phases)

    @property
    def id(self) -> str:
        """model/target[@profile]/recipe: the cell's folder under OUT/cells and its name in the tables."""
        where = self.target if self.profile is None else f"{self.target}@{Path(self.profile).stem}"
        return f"{self.model}/{where}/{self.recipe}"

    @property
    def digest(self) -> str:
        """The sha256 of everything that defines the cell: a journaled result counts only for the same cell."""
        text = json.dumps({"id": self.id, "given": self.given, "settings": self.settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Sweep:
    path: Path
    cells: list[Cell]
    cache_dir: Path | None = None


def load_sweep(path: str | Path) -> Sweep:
    """The sweep SWEEP.yaml describes, every cell checked (SweepError names the first problem)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read {path}: {e.strerror or first_line(e)}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML ({first_line(e)})") from None
    try:
        return _parse(data, path.resolve().parent, path)
    except EdgemlError as e:
        raise SweepError(f"{path}: {e}") from None


def _parse(data: Any, base: Path, path: Path) -> Sweep:
    _mapping(data, "the file")
    _known(data, TOP_KEYS, "the file")
    for key in ("models", "targets", "recipes"):
        if not data.get(key):
            raise SweepError(f"'{key}' is missing or empty")
    shared = data.get("settings") or {}
    _mapping(shared, "settings")
    if {"target", "profile"} & set(shared):
        raise SweepError("settings: target and profile come from 'targets', not from settings")
    models = {name: _model(name, spec, base) for name, spec in _mapping(data["models"], "models").items()}
    targets = _targets(data["targets"], base)
    recipes = _recipes(data["recipes"], shared, base)
    cells = [Cell(model, target, profile, recipe, given, {**settings, "target": target, "profile": profile},
                  is_language_model(given.get("model")))
             for model, given in models.items() for target, profile in targets
             for recipe, settings in recipes.items()]
    ids = [c.id for c in cells]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise SweepError(f"cell {duplicate} appears twice: give targets and recipes distinct names")
    for cell in cells:
        check_cell(cell)
    cache = data.get("cache_dir")
    return Sweep(path, cells, None if cache is None else base / str(cache))


def _model(name: Any, spec: Any, base: Path) -> dict:
    _name(name, "model")
    where = f"models.{name}"
    _mapping(spec, where)
    _known(spec, MODEL_KEYS, where)
    given = dict(spec)
    model = given.get("model")
    if model is not None and is_language_model(_path(base, model)):
        return _language_model(given, base, where)
    if ("model" in given) == ("example" in given):
        raise SweepError(f"{where}: give 'model' (a file or package.module:factory) or 'example' (one of them)")
    if model is not None and (":" not in str(model) or _path(base, model).exists()):
        given["model"] = _existing(base, model, f"{where}.model")
    for key in MODEL_PATHS:
        if given.get(key) is not None:
            given[key] = _existing(base, given[key], f"{where}.{key}")
    shapes = given.pop("input_shape", [])
    given["input_shapes"] = [shapes] if isinstance(shapes, str) else list(shapes)
    from edgeml.pipeline.load import Given

    Given(**given).check()
    return given


def _language_model(given: dict, base: Path, where: str) -> dict:
    """A causal language model's arguments: its path, and its text read as `optimize` reads it."""
    from edgeml.inputs.text import read_text

    other = [key for key in MODEL_KEYS if key in given and key not in LANGUAGE_MODEL_KEYS]
    given["model"] = str(_path(base, given["model"]))
    if other:
        raise SweepError(f"{where}: {', '.join(other)} {'does' if len(other) == 1 else 'do'} not apply to a language "
                         f"model (it takes {', '.join(LANGUAGE_MODEL_KEYS)}: calib_data and eval_data are text, a "
                         ".txt file or a folder of them)")
    for key in ("calib_data", "eval_data"):
        if given.get(key) is not None:
            given[key] = _existing(base, given[key], f"{where}.{key}")
            try:
                read_text(given[key])
            except EdgemlError as e:
                raise SweepError(f"{where}.{key}: {e}") from None
    return given


def _targets(entries: Any, base: Path) -> list[tuple[str, str | None]]:
    if not isinstance(entries, list):
        raise SweepError("targets: give a list (e.g. [cpu, {target: jetson, profile: jetson-orin-nx}])")
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append((entry, None))
            continue
        _mapping(entry, "targets entry")
        _known(entry, TARGET_KEYS, f"targets entry {entry.get('target', '')}".strip())
        if "target" not in entry or ("profile" in entry and "profiles" in entry):
            raise SweepError(f"targets entry {entry}: give 'target' and at most one of 'profile', 'profiles'")
        profiles = entry.get("profiles", [entry.get("profile")])
        if not isinstance(profiles, list) or not profiles:
            raise SweepError(f"targets entry {entry['target']}: 'profiles' is a non-empty list")
        out += [(str(entry["target"]), _profile(base, p)) for p in profiles]
    return out


def _profile(base: Path, profile: Any) -> str | None:
    """A profile name as given, or a profile file (.yaml/.yml) relative to the sweep file."""
    if profile is None:
        return None
    text = str(profile)
    return _existing(base, text, "profile") if text.endswith((".yaml", ".yml")) else text


def _recipes(value: Any, shared: dict, base: Path) -> dict[str, dict]:
    """name -> the recipe's settings (YAML form), shared settings under the recipe's own."""
    if isinstance(value, dict):
        _known(value, ("grid",), "recipes")
        grid = _mapping(value.get("grid"), "recipes.grid")
        if not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise SweepError("recipes.grid: give each recipe key a non-empty list of values")
        entries = [{"name": ",".join(f"{k}={v}" for k, v in zip(grid, combo)), **dict(zip(grid, combo))}
                   for combo in itertools.product(*grid.values())]
    elif isinstance(value, list):
        entries = value
    else:
        raise SweepError("recipes: give a list of named recipes or {grid: {KEY: [VALUES]}}")
    recipes: dict[str, dict] = {}
    for entry in entries:
        _mapping(entry, "recipes entry")
        entry = dict(entry)
        name = str(entry.pop("name", ""))
        _name(name, "recipe")
        if name in recipes:
            raise SweepError(f"recipe '{name}' is named twice")
        if {"target", "profile"} & set(entry):
            raise SweepError(f"recipe {name}: target and profile come from 'targets', not from a recipe")
        settings = dict(shared)
        if "recipe" in entry:
            settings |= _recipe_file(_existing(base, entry.pop("recipe"), f"recipe {name}"))
        settings |= entry
        try:
            parse_settings(settings)
        except EdgemlError as e:
            raise SweepError(f"recipe {name}: {e}") from None
        recipes[name] = settings
    return recipes


def _recipe_file(path: str) -> dict:
    """The settings a recipe file gives, in their YAML form (target and profile left to the sweep)."""
    import yaml

    load_recipe(path)                                # checks it, naming the file
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {k: v for k, v in data.items() if k not in ("target", "profile")}


def check_cell(cell: Cell) -> None:
    """What `optimize` would refuse before building anything, for this cell."""
    from edgeml.pipeline import plan
    from edgeml.pipeline.candidates import candidates_for
    from edgeml.targets import get_target

    try:
        recipe = cell_recipe(cell)
        target = get_target(recipe.target)
        if cell.language_model:
            _check_language_model_cell(cell, target, recipe)
            return
        plan.resolve_profile(target, recipe.profile)
        candidates = candidates_for(target, recipe)
        onnx = str(cell.given.get("model", "")).endswith(".onnx")
        if onnx and all(c.needs_source for c in candidates):
            raise SweepError(f"target '{target.name}' converts PyTorch models and the model is ONNX")
        if onnx and recipe.quantizer == "inc":
            raise SweepError("quantizer inc quantizes PyTorch models and the model is ONNX")
    except EdgemlError as e:
        raise SweepError(f"cell {cell.id}: {e}") from None


def _check_language_model_cell(cell: Cell, target, recipe: Recipe) -> None:
    """What `optimize` refuses of a language model before loading it, as it refuses it
    (edgeml.pipeline.language_model.language_model_plan). A profile for builds timed here is refused too: optimize
    would ignore it, and the cell would repeat the one without it."""
    from edgeml.pipeline.language_model import language_model_plan

    _, profile = language_model_plan(recipe)
    if profile is None and cell.profile is not None:
        raise SweepError(f"target '{target.name}' times language models on the node that runs the cell, so a device "
                         "profile does not apply to them: list the target without a profile for this model")


def cell_recipe(cell: Cell) -> Recipe:
    return make_recipe(**parse_settings(cell.settings))


def _existing(base: Path, value: Any, where: str) -> str:
    path = _path(base, value)
    if not path.exists():
        raise SweepError(f"{where}: {path} does not exist")
    return str(path)


def _path(base: Path, value: Any) -> Path:
    return base / Path(str(value)).expanduser()


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise SweepError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _known(value: dict, keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(map(str, value)) - set(keys))
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(keys)}")


def _name(name: Any, kind: str) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise SweepError(f"{kind} name {name!r}: use letters, digits and _ . = , + - (it names a folder)")
