"""The fleet file of `edgeml rollout`: the devices a bundle goes to and the thresholds it must meet there.

    devices:
      - name: kitchen-pi
        to: ssh://pi@10.0.0.5/opt/edgeml      # as `edgeml ship --to`: ssh://[user@]host[:port]/path,
                                             # [user@]host:path (a colon before any slash) or a folder
        identity: ~/.ssh/fleet_ed25519       # optional: as `ship -i`
        ssh_options: {StrictHostKeyChecking: accept-new}   # optional: as `ship --ssh-option` (Port: 2222 for
                                             # host:path, which has no port)
        python: /opt/venv/bin/python3        # optional: runs the bundle's run.py there
        threads: 4                           # optional: threads of the on-device timing
    thresholds:                              # optional, fleet-wide
      max_latency_ratio: 1.5                 # a canary fails when its slowdown is above this beyond doubt (the
                                             # lower end of its 95% CI) against the release the device runs,
                                             # else against the build report's p50 (a language
                                             # model: decode ms per token, else the manifest's rate)
      measure_seconds: 1.0                   # timed seconds of each release in the on-device profile
      rounds: 9                              # alternating rounds those seconds are split over

Relative local folders and key files are taken relative to the fleet file. The whole file is checked
before anything runs: `load_fleet` raises FleetError with every problem, one line each.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgeml.deploy.ship import Destination, parse_destination
from edgeml.errors import EdgemlError, first_line
from edgeml.measure.paired_timing import MIN_ROUNDS

DEVICE_KEYS = ("name", "to", "identity", "ssh_options", "python", "threads")
REMOTE_PYTHON = "python3"
RATIO_ABOVE_1 = "a number above 1 (1.5: a canary may be up to 1.5x as slow)"


class FleetError(EdgemlError):
    """The fleet file cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Thresholds:
    max_latency_ratio: float = 1.5
    measure_seconds: float = 1.0
    rounds: int = 9


@dataclass(frozen=True)
class Device:
    name: str
    destination: Destination
    identity: Path | None = None
    ssh_options: dict[str, str] = field(default_factory=dict)
    python: str = REMOTE_PYTHON       # this Python for a local folder
    threads: int | None = None        # None: the build report's threads, else the runtime's default

    @property
    def remote(self) -> bool:
        return self.destination.host is not None


@dataclass(frozen=True)
class Fleet:
    path: Path
    devices: list[Device]
    thresholds: Thresholds


def load_fleet(path: Path | str) -> Fleet:
    """Read and check the fleet file; FleetError lists every problem found."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise FleetError([f"{path}: cannot read it: {getattr(e, 'strerror', None) or first_line(e)}"]) from None
    except yaml.YAMLError as e:
        raise FleetError([f"{path}: not valid YAML: {first_line(e)}"]) from None
    problems: list[str] = []
    if not isinstance(data, dict):
        raise FleetError([f"{path}: expected a mapping with `devices:` (and optionally `thresholds:`)"])
    for key in data.keys() - {"devices", "thresholds"}:
        problems.append(f"{path}: unknown key {key!r}: use devices and thresholds")
    entries = data.get("devices")
    devices = []
    if not isinstance(entries, list) or not entries:
        problems.append(f"{path}: devices: give a list of devices, each with a name and a `to` destination")
    else:
        for i, entry in enumerate(entries):
            device = _device(entry, f"{path}: devices[{i}]", path.resolve().parent, problems)
            if device is not None:
                devices.append(device)
    for kind, key in (("name", lambda d: d.name), ("destination", lambda d: str(d.destination))):
        seen = set()
        for device in devices:
            if key(device) in seen:
                problems.append(f"{path}: device {device.name}: another device has the same {kind} "
                                f"({key(device)})")
            seen.add(key(device))
    thresholds = _thresholds(data.get("thresholds"), f"{path}: thresholds", problems)
    if problems:
        raise FleetError(problems)
    return Fleet(path, devices, thresholds)


def _device(entry: object, where: str, base: Path, problems: list[str]) -> Device | None:
    """One device entry, or None after adding its problems."""
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a mapping with name and to")
        return None
    before = len(problems)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: name: give the device a name")
    else:
        where = f"{where} ({name})"
    for key in entry.keys() - set(DEVICE_KEYS):
        problems.append(f"{where}: unknown key {key!r}: use {', '.join(DEVICE_KEYS)}")
    destination = _destination(entry.get("to"), where, base, problems)
    identity = entry.get("identity")
    if identity is not None:
        identity = _under(base, str(identity))
        if not identity.is_file():
            problems.append(f"{where}: identity {identity}: no such key file")
    options = entry.get("ssh_options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) and k.strip() and isinstance(v, (str, int, bool))
                                                for k, v in options.items()):
        problems.append(f"{where}: ssh_options: a mapping of ssh option names to values, e.g. "
                        "{StrictHostKeyChecking: accept-new}")
        options = {}
    if destination is not None and destination.host is None and (identity is not None or options):
        problems.append(f"{where}: identity and ssh_options apply to SSH destinations only")
    python = entry.get("python", REMOTE_PYTHON if destination is None or destination.host else sys.executable)
    if not isinstance(python, str) or not python.strip():
        problems.append(f"{where}: python: the path of the Python interpreter that runs the bundle there")
    elif destination is not None and destination.host is None and not shutil.which(python):
        problems.append(f"{where}: python {python}: not found here")
    threads = entry.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        problems.append(f"{where}: threads: a whole number, at least 1")
    if len(problems) > before:
        return None
    options = {k.strip(): ("yes" if v is True else "no" if v is False else str(v)) for k, v in options.items()}
    return Device(name, destination, identity, options, python, threads)


def _destination(to: object, where: str, base: Path, problems: list[str]) -> Destination | None:
    if not isinstance(to, str) or not to.strip():
        problems.append(f"{where}: to: give the destination, ssh://[user@]host[:port]/path, [user@]host:path "
                        "or a local folder")
        return None
    try:
        destination = parse_destination(to, "to")
    except EdgemlError as e:
        problems.append(f"{where}: {e}")
        return None
    return destination if destination.host else Destination(str(_under(base, destination.path)))


def _thresholds(data: object, where: str, problems: list[str]) -> Thresholds:
    if data is None:
        return Thresholds()
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping, e.g. {{max_latency_ratio: 1.5}}")
        return Thresholds()
    names = list(Thresholds.__dataclass_fields__)
    for key in data.keys() - set(names):
        problems.append(f"{where}: unknown key {key!r}: use {', '.join(names)}")
    values = {}
    for key in names:
        value = data.get(key)
        if value is None:
            continue
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if key == "rounds":
            if not (number and float(value).is_integer() and value >= MIN_ROUNDS):
                problems.append(f"{where}: rounds: a whole number, at least {MIN_ROUNDS}")
            else:
                values[key] = int(value)
        elif key == "max_latency_ratio" and not (number and value > 1):
            problems.append(f"{where}: max_latency_ratio: {RATIO_ABOVE_1}")
        elif not (number and value > 0):
            problems.append(f"{where}: {key}: a number above 0")
        else:
            values[key] = float(value)
    return Thresholds(**values)


def _under(base: Path, path: str) -> Path:
    """`path` with ~ expanded, relative to the fleet file's folder when not absolute."""
    return base / Path(path).expanduser()
