"""Device profiles: YAML files describing a device's compute, memory and runtimes.

A bundled profile is named by its file stem (`jetson-orin-nano`); a user's own file is named by
its path. Every file is read with `yaml.safe_load` and checked against `schema.json`.

CPU profiles also give per-core numbers in `cpu` (`cores`, `freq_ghz`, `flops_per_cycle`, and
optionally `core_bandwidth_gbs`), so that a prediction at N threads uses min(N, cores) cores:
peak = min(N, cores) x freq_ghz x flops_per_cycle[precision], and bandwidth =
min(memory_bandwidth_gbs, min(N, cores) x core_bandwidth_gbs). Without a thread count, or on a
device without per-core numbers (GPUs, Jetson), the whole-device `peak_gops` applies.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeml.errors import TargetError, first_line

BUNDLED = Path(__file__).parent
SCHEMA = BUNDLED / "schema.json"
# The profile a target uses when --profile is not given; None: the target is this machine.
DEFAULTS = {"jetson": "jetson-orin-nano", "gpu": "nvidia-t4", "mobile": "android-phone", "cpu": None}


class ProfileError(TargetError):
    """A device profile that cannot be found or read, or that has no path for a request."""


@dataclass(frozen=True)
class Profile:
    """One device, as its YAML file describes it (numbers from the vendor's datasheet)."""
    name: str                                   # file stem, e.g. jetson-orin-nano
    display_name: str                           # e.g. NVIDIA Jetson Orin Nano 8GB
    target: str                                 # cpu | gpu | jetson | mobile
    cpu: dict                                   # arch (x86_64 | arm64), cores, isa [..], freq_ghz
    gpu: dict | None                            # arch, compute_capability, ... (None: no GPU)
    runtimes: dict                              # e.g. jetpack, tensorrt, cuda, litert
    precisions: tuple[str, ...]                 # precisions the device computes in: fp32, fp16, int8, ...
    dla_cores: int                              # NVIDIA Deep Learning Accelerator cores (0: none)
    peak_gops: dict[str, float]                 # peak dense throughput per precision, 1e9 ops/s (1 MAC = 2 ops)
    memory_bandwidth_gbs: float                 # peak DRAM bandwidth, GB/s
    memory_gb: float                            # memory the model shares with everything else on the device
    power_modes: tuple[dict, ...] = ()          # {name, watts}
    efficiency: dict = field(default_factory=dict)   # compute, memory (fractions of peak), layer_overhead_us
    sources: tuple[str, ...] = ()               # datasheet URLs the numbers come from
    path: str | None = None                     # the YAML file it was read from

    def supports(self, precision: str) -> bool:
        return precision in self.precisions

    def cores_used(self, threads: int | None) -> int | None:
        """How many cores `threads` threads run on, for profiles with per-core numbers (else None)."""
        if threads is None or "cores" not in self.cpu or "flops_per_cycle" not in self.cpu:
            return None
        return max(1, min(threads, self.cpu["cores"]))

    def peak(self, precision: str, threads: int | None = None) -> float | None:
        """Peak dense throughput in ops/s at `precision` (None: the device has no such path)."""
        if not self.supports(precision):
            return None
        cores = self.cores_used(threads)
        per_cycle = self.cpu.get("flops_per_cycle", {}).get(precision)
        if cores is None or per_cycle is None:
            return self.peak_gops[precision] * 1e9
        return cores * self.cpu["freq_ghz"] * 1e9 * per_cycle

    def bandwidth(self, threads: int | None = None) -> float:
        """Peak memory bandwidth in bytes/s that `threads` threads can draw."""
        total = self.memory_bandwidth_gbs * 1e9
        cores = self.cores_used(threads)
        if cores is None or "core_bandwidth_gbs" not in self.cpu:
            return total
        return min(total, cores * self.cpu["core_bandwidth_gbs"] * 1e9)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))     # tuples -> lists: plain JSON/YAML data


def default_profile(target: str) -> str | None:
    """The bundled profile `target` uses by default; None for cpu, whose device is this host."""
    if target not in DEFAULTS:
        raise ProfileError(f"unknown target '{target}': targets are {', '.join(DEFAULTS)}")
    return DEFAULTS[target]


def bundled_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED.glob("*.yaml"))


def list_profiles() -> list[Profile]:
    """The bundled profiles, sorted by name."""
    return [load_profile(name) for name in bundled_names()]


def load_profile(spec: str) -> Profile:
    """A bundled profile by name, or a user's YAML file (a spec with "/" or a .yaml/.yml suffix)."""
    if "/" in spec or spec.endswith((".yaml", ".yml")):
        path = Path(spec)
        if not path.is_file():
            raise ProfileError(f"device profile file {spec} not found")
        label = spec
    else:
        path = BUNDLED / f"{spec}.yaml"
        if not path.is_file():
            raise ProfileError(f"unknown device profile '{spec}': available are {', '.join(bundled_names())} "
                               "(or give the path of a YAML file)")
        label = f"profiles/{path.name}"
    return _read(path, label)


def _read(path: Path, label: str) -> Profile:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ProfileError(f"{label}: cannot read it as YAML: {first_line(e)}") from None
    problem = _schema_problem(data) or _consistency_problem(data)
    if problem:
        raise ProfileError(f"{label}: {problem}")
    return Profile(
        name=path.stem, display_name=data["display_name"], target=data["target"], cpu=data["cpu"],
        gpu=data["gpu"], runtimes=data["runtimes"], precisions=tuple(data["precisions"]),
        dla_cores=data["dla_cores"], peak_gops={k: float(v) for k, v in data["peak_gops"].items()},
        memory_bandwidth_gbs=float(data["memory_bandwidth_gbs"]), memory_gb=float(data["memory_gb"]),
        power_modes=tuple(data.get("power_modes", ())), efficiency=data["efficiency"],
        sources=tuple(data["sources"]), path=str(path))


def _schema_problem(data) -> str | None:
    """The most relevant schema violation as `field.path: message`, or None."""
    import jsonschema
    from jsonschema.exceptions import best_match

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    error = best_match(validator.iter_errors(data))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{_join(where, missing[0])}: missing (a required field)"
    if error.validator == "additionalProperties":
        unknown = sorted(k for k in error.instance if k not in error.schema.get("properties", {}))
        allowed = ", ".join(error.schema.get("properties", {}))
        return f"{_join(where, unknown[0])}: unknown field (allowed: {allowed})"
    return f"{where or 'the file'}: {error.message}"


def _consistency_problem(data: dict) -> str | None:
    """What the schema cannot say: every precision listed has a peak, and every peak a precision."""
    for precision in data["precisions"]:
        if precision not in data["peak_gops"]:
            return f"peak_gops.{precision}: missing (precisions lists {precision})"
    for precision in data["peak_gops"]:
        if precision not in data["precisions"]:
            return f"peak_gops.{precision}: {precision} is not in precisions"
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
