"""Recipes: the settings of an `optimize` run, in a YAML file that can be run again.

    target: cpu
    profile: jetson-orin-nano  # a device profile (`edgeml profiles list`) or a YAML file; default per target
    precision: auto            # auto | fp32 | fp16 | bf16 | int8 | int4
    quantizer: auto            # auto | ort | openvino | litert | inc (inc: opt-in, PyTorch models only)
    calibration_method: minmax # minmax | entropy | percentile
    metric: auto               # auto | accuracy | agreement | cosine (what max_accuracy_drop is measured in)
    max_accuracy_drop: 0.01    # 0.01 = 1 point
    max_ppl_increase: 0.05     # language models: largest accepted relative perplexity increase (0.05 = 5 %)
    tuning_budget: 5m          # bounds the accuracy-budget search: 90s, 10m, 1h
    prune: 0.5                 # or {ratio: 0.5, importance: l1, round_to: 8, global: false, ignore: [...]}
    distill: auto              # auto | true | false, or {epochs: 30, temperature: 4, alpha: 0.7, ...}
    seed: 0                    # data splits, random inputs, distillation
    threads: 2
    measure_seconds: 1.0
    drift: {psi: 0.2, pvalue: 0.01, window: 200, min_samples: 100}   # what `edgeml serve` calls drift

Command-line flags override the file; the run record keeps the effective recipe. Files are read
with `yaml.safe_load` only; unknown keys and wrong types are errors, never ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgeml.bundle.monitoring import DriftConfig
from edgeml.compress.distill import DistillConfig
from edgeml.compress.prune import StructuredConfig
from edgeml.compress.quantize import CALIBRATION_METHODS
from edgeml.compress.quantize import QUANTIZERS as _QUANTIZER_REGISTRY
from edgeml.errors import EdgemlError, first_line
from edgeml.measure.evaluate import METRICS

PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8", "int4")
QUANTIZERS = ("auto", *_QUANTIZER_REGISTRY)
DISTILL_MODES = (None, True, False)      # None: after pruning, when training data is given


class RecipeError(EdgemlError):
    """A recipe file or a setting that cannot be used."""


@dataclass(frozen=True)
class Recipe:
    target: str = "cpu"
    profile: str | None = None                 # device profile name or YAML path; None: the target's default
    precision: str = "auto"
    quantizer: str = "auto"
    calibration_method: str = "minmax"
    metric: str = "auto"                       # auto | accuracy | agreement | cosine
    max_accuracy_drop: float = 0.01
    max_ppl_increase: float = 0.05             # language models: relative perplexity increase
    tuning_budget: float = 300.0               # seconds
    prune: StructuredConfig | None = None
    distill: bool | None = None
    distill_config: DistillConfig = field(default_factory=DistillConfig)
    seed: int = 0
    threads: int | None = None
    measure_seconds: float = 1.0
    drift: DriftConfig = field(default_factory=DriftConfig)     # the thresholds the bundle's monitoring block keeps

    def to_dict(self) -> dict:
        """The recipe as it would be written to a file (and is kept in the run record)."""
        d = asdict(self)
        distill = d.pop("distill_config")
        distill.pop("seed")                    # the recipe's seed is the one seed of a run
        d["distill"] = {"enabled": "auto" if self.distill is None else self.distill, **distill}
        if self.prune is not None:
            d["prune"]["global"] = d["prune"].pop("global_pruning")
            d["prune"]["ignore"] = list(self.prune.ignore)
        return d


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML that `load_recipe` reads back to the same Recipe."""
    import yaml

    return "# edgeml recipe: run again with `edgeml optimize MODEL --recipe recipe.yaml ...`\n" + \
        yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def load_recipe(path: str | Path) -> dict:
    """The settings a recipe file gives, checked, as keyword arguments for `make_recipe`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror or first_line(e)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML ({first_line(e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of settings, not {type(data).__name__}")
    try:
        settings = parse_settings(data)
        make_recipe(**settings)                # every value checked here, so that the error names the file
    except RecipeError as e:
        raise RecipeError(f"recipe {path}: {e}") from None
    return settings


def parse_settings(data: dict) -> dict:
    """Check a mapping of recipe settings (from YAML) and turn it into `make_recipe` arguments."""
    known = {f.name for f in fields(Recipe)} - {"distill_config"}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise RecipeError(f"unknown setting(s) {_keys(unknown)}; known: {', '.join(sorted(known))}")
    settings = dict(data)
    if "tuning_budget" in settings:
        settings["tuning_budget"] = parse_duration(settings["tuning_budget"])
    if "prune" in settings:
        settings["prune"] = _prune(settings["prune"])
    if "distill" in settings:
        settings["distill"], config = _distill(settings["distill"])
        if config is not None:
            settings["distill_config"] = config
    if "drift" in settings:
        settings["drift"] = _drift(settings["drift"])
    return settings


def make_recipe(base: Recipe = Recipe(), **settings: Any) -> Recipe:
    """`base` with `settings` applied, every value checked."""
    prune = settings.get("prune")
    if isinstance(prune, (int, float)) and not isinstance(prune, bool):
        settings["prune"] = StructuredConfig(ratio=float(prune))
    if isinstance(settings.get("drift"), dict):
        settings["drift"] = _drift(settings["drift"])
    recipe = replace(base, **settings)
    _check(recipe)
    return recipe


def parse_duration(value: Any) -> float:
    """Seconds from 90, "90s", "10m", "1h" or "1h30m"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    else:
        text = str(value).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?", text)
        if not text or parts is None or not any(parts.groups()):
            raise RecipeError(f"tuning budget '{value}' is not a duration (e.g. 90s, 10m, 1h)")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = h * 3600 + m * 60 + s
    if not _finite(seconds) or seconds <= 0:
        raise RecipeError(f"tuning budget must be positive and finite, got '{value}'")
    return float(seconds)


def _prune(value: Any) -> StructuredConfig | None:
    if value is None or value is False:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _build(StructuredConfig, {"ratio": value}, "prune")
    if isinstance(value, dict):
        value = dict(value)
        if "global" in value:
            value["global_pruning"] = value.pop("global")
        if isinstance(value.get("ignore"), list):
            value["ignore"] = tuple(value["ignore"])
        return _build(StructuredConfig, value, "prune")
    raise RecipeError(f"prune: give a ratio (e.g. 0.5) or a mapping, not {value!r}")


def _distill(value: Any) -> tuple[bool | None, DistillConfig | None]:
    if value in ("auto", None):
        return None, None
    if isinstance(value, bool):
        return value, None
    if isinstance(value, dict):
        value = dict(value)
        enabled = value.pop("enabled", True)
        if enabled not in (True, False, "auto"):
            raise RecipeError(f"distill.enabled: give true, false or auto, not {enabled!r}")
        return (None if enabled == "auto" else enabled), _build(DistillConfig, value, "distill")
    raise RecipeError(f"distill: give auto, true, false or a mapping of settings, not {value!r}")


def _drift(value: Any) -> DriftConfig:
    if not isinstance(value, dict):
        raise RecipeError(f"drift: give a mapping of settings (psi, pvalue, window, min_samples), not {value!r}")
    return _build(DriftConfig, value, "drift")


def _build(cls, values: dict, key: str):
    known = {f.name for f in fields(cls)} - {"seed"}     # the recipe's seed is the one seed of a run
    unknown = sorted(set(map(str, values)) - known)
    if unknown:
        names = sorted(("global" if k == "global_pruning" else k) for k in known)
        raise RecipeError(f"{key}: unknown setting(s) {_keys(unknown)}; known: {', '.join(names)}")
    for f in fields(cls):
        if f.name in values:
            _check_type(f"{key}.{f.name}", values[f.name], f)
    try:
        return cls(**values)
    except EdgemlError as e:
        raise RecipeError(f"{key}: {e}") from None


def _keys(keys: list[str]) -> str:
    """Keys as written, quoted where they are not plain words (a key may hold spaces or a line break)."""
    return ", ".join(k if k.isidentifier() else repr(k) for k in keys)


def _check(recipe: Recipe) -> None:
    for f in fields(Recipe):
        if f.name not in ("prune", "distill", "distill_config", "drift"):
            _check_type(_flag(f.name), getattr(recipe, f.name), f)
    if recipe.precision not in PRECISIONS:
        raise RecipeError(f"{_flag('precision')}: '{recipe.precision}' is not one of {', '.join(PRECISIONS)}")
    if recipe.quantizer not in QUANTIZERS:
        raise RecipeError(f"{_flag('quantizer')}: '{recipe.quantizer}' is not one of {', '.join(QUANTIZERS)}")
    if recipe.metric not in METRICS:
        raise RecipeError(f"{_flag('metric')}: '{recipe.metric}' is not one of {', '.join(METRICS)}")
    if recipe.calibration_method not in CALIBRATION_METHODS:
        raise RecipeError(f"{_flag('calibration_method')}: '{recipe.calibration_method}' is not one of "
                          f"{', '.join(CALIBRATION_METHODS)}")
    if not 0 <= recipe.max_accuracy_drop < 1:
        raise RecipeError(f"{_flag('max_accuracy_drop')} is a fraction between 0 and 1 (0.01 = 1 point), "
                          f"got {recipe.max_accuracy_drop}")
    if not 0 <= recipe.max_ppl_increase < 10:
        raise RecipeError(f"{_flag('max_ppl_increase')} is a relative increase (0.05 = 5 %), "
                          f"got {recipe.max_ppl_increase}")
    if recipe.tuning_budget <= 0:
        raise RecipeError(f"{_flag('tuning_budget')} must be positive, got {recipe.tuning_budget}")
    if recipe.profile is not None and not isinstance(recipe.profile, str):
        raise RecipeError(f"{_flag('profile')} must be a profile name or a YAML path, got {recipe.profile!r}")
    if recipe.threads is not None and (isinstance(recipe.threads, bool) or not isinstance(recipe.threads, int)):
        raise RecipeError(f"{_flag('threads')} must be int, got {recipe.threads!r}")
    if recipe.threads is not None and recipe.threads < 1:
        raise RecipeError(f"{_flag('threads')} must be at least 1, got {recipe.threads}")
    for name in ("tuning_budget", "measure_seconds"):
        if not _finite(getattr(recipe, name)):
            raise RecipeError(f"{_flag(name)} must be a finite number, got {getattr(recipe, name)!r}")
    if recipe.measure_seconds <= 0:
        raise RecipeError(f"{_flag('measure_seconds')} must be positive, got {recipe.measure_seconds}")
    if not 0 <= recipe.seed < 2**32:
        raise RecipeError(f"{_flag('seed')} must be a whole number from 0 to 2**32 - 1, got {recipe.seed}")
    if recipe.distill not in DISTILL_MODES:
        raise RecipeError(f"distill: give true, false or auto, not {recipe.distill!r}")


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:                      # an int too large for a float
        return False


def _flag(name: str) -> str:
    """A setting named as in recipes and on the command line."""
    return f"{name} (--{name.replace('_', '-')})"


def _check_type(name: str, value: Any, setting) -> None:
    """Values must have the type of the setting's default (ints are accepted for floats); None only where
    the setting's type allows it. A setting whose default is None is checked on its own."""
    if (value is None and "None" in str(setting.type)) or setting.default is None:
        return
    expected = type(setting.default)
    ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if expected is tuple and isinstance(value, (tuple, list)):
        ok = all(isinstance(v, str) for v in value)
    if not ok:
        raise RecipeError(f"{name} must be {expected.__name__}, got {value!r}")
