"""`edgeml rollout`: a bundle to a fleet of devices, canaries first; `--rollback`: every device back one release.

The first N devices (the canaries) get the bundle shipped into DEST/releases/<id> (edgeml.deploy.releases),
then run its self-check there (the files' sha256, checked by ship, and the bundle's `run.py --check`, a
language model's `run.py --verify`) and a latency check. The check times the canary against the release the
device runs, there, in alternating rounds in one process (edgeml.deploy.device_timing: a call's time, a
language model's decode time per token), and takes the median of the rounds' ratios with a 95% bootstrap CI
over rounds (edgeml.measure.paired_timing.round_speedup); a device that runs no release yet has its rounds
compared with the build's own measurement, timed elsewhere: the build report's p50, a language model's decode
rate in its manifest. A canary fails only when the CI's lower end is above `max_latency_ratio`, so noise alone
does not fail an equally fast build; a canary of one kind (a language model's bundle or another model's) on a
device that runs the other kind is not compared at all, as their timings count different units. Only when
every canary passes do their `current` links switch; then each other device is shipped to, checked and
switched in turn. Any failure stops the rollout and leaves the devices not yet switched on their previous
release.

Every step is one JSON line appended to OUT/rollout.jsonl and flushed as it ends, so a rollout that is
killed still leaves a readable log.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from edgeml.bundle.folder import Bundle
from edgeml.deploy.fleet import Device, Fleet
from edgeml.deploy.releases import CURRENT, PREVIOUS, RELEASES, DeviceFolder, bundle_id, release_of
from edgeml.errors import EdgemlError, first_line
from edgeml.measure.paired_timing import round_speedup

LOG = "rollout.jsonl"
DEFAULT_OUT = "edgeml-rollout"        # beside the fleet file
REPORT = "report.json"                # the build report, beside the bundle in optimize's OUT


@dataclass
class Step:
    outcome: str                      # ok | failed | skipped
    detail: str                       # one line
    numbers: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome != "failed"


@dataclass
class Outcome:
    passed: bool
    line: str                         # the closing line
    running: dict[str, str | None]    # device -> the release its `current` points at
    log: Path


class RolloutLog:
    """OUT/rollout.jsonl, appended one JSON object per line, flushed per line."""

    def __init__(self, out: Path, announce: Callable[[str], None]):
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.file = open(out / LOG, "a", encoding="utf-8")
        except OSError as e:
            raise EdgemlError(f"cannot write {out / LOG}: {e.strerror or first_line(e)}") from None
        self.path = out / LOG
        self.announce = announce
        self.started = _now()         # names this rollout (or rollback) in every record

    def record(self, step: str, **fields) -> None:
        self.file.write(json.dumps({"run": self.started, "step": step, **fields}) + "\n")
        self.file.flush()

    def step(self, step: str, device: Device, action: Callable[[], Step], **fields) -> Step:
        """Run one step: time it, log it, print one line; an EdgemlError is the step failing with that message."""
        started, clock = _now(), time.perf_counter()
        try:
            result = action()
        except EdgemlError as e:
            result = Step("failed", str(e))
        seconds = time.perf_counter() - clock
        self.record(step, device=device.name, **fields, started=started, finished=_now(),
                    seconds=round(seconds, 3), outcome=result.outcome, detail=result.detail, **result.numbers)
        self.announce(f"{device.name}: {step}: {result.outcome}: {result.detail} [{seconds:.1f} s]")
        return result

    def close(self) -> None:
        self.file.close()


def default_out(fleet_path: Path) -> Path:
    return Path(fleet_path).parent / DEFAULT_OUT


def rollout(bundle: Path | str, fleet: Fleet, *, canaries: int = 1, out: Path | None = None,
            announce: Callable[[str], None] = print) -> Outcome:
    """Roll BUNDLE (a bundle folder) out to the fleet; EdgemlError before anything runs when it cannot be."""
    if not 1 <= canaries <= len(fleet.devices):
        raise EdgemlError(f"--canary {canaries}: give 1 to {len(fleet.devices)} (the fleet's devices)")
    opened = Bundle.open(bundle, fields=True)
    for required in ("run.py", opened.reference_file):
        if not required or not (opened.folder / required).is_file():
            raise EdgemlError(f"{opened.folder} has no {required or 'reference vectors'}, so it cannot check itself "
                              "on a device: rebuild it with `edgeml optimize`")
    release, candidate = bundle_id(opened.folder), opened.candidate
    build, why = build_latency(opened)
    log = RolloutLog(out or default_out(fleet.path), announce)
    try:
        log.record("start", bundle=str(opened.folder.resolve()), release=release, candidate=candidate,
                   fleet=str(fleet.path.resolve()), canaries=[d.name for d in fleet.devices[:canaries]],
                   thresholds=asdict(fleet.thresholds), unit=opened.latency_unit,
                   build_p50_ms=build and build["p50_ms"],
                   latency_check="against the release each canary runs; where none: "
                                 + (f"skipped: {why}" if why else f"against {_yardstick(opened)}"))
        if why:
            announce(f"no build-time {'decode rate' if opened.language_model else 'p50'} ({why}): a canary that "
                     "runs no release yet gets no latency check")
        result = _Rollout(opened, release, fleet, log, build, why).run(canaries)
        log.record("end", outcome="ok" if result.passed else "failed", detail=result.line, running=result.running)
    finally:
        log.close()
    return result


def rollback(fleet: Fleet, *, out: Path | None = None, announce: Callable[[str], None] = print) -> Outcome:
    """Point every device's `current` back at its `previous` release (and `previous` at what was current).

    Passed only when at least one device went back and every device then runs the same release.
    """
    log = RolloutLog(out or default_out(fleet.path), announce)
    running: dict[str, str | None] = {}
    failed, moved = [], []
    try:
        log.record("start", rollback=True, fleet=str(fleet.path.resolve()))
        for device in fleet.devices:
            step = log.step("rollback", device, partial(_back, device, running))
            if not step.passed:
                failed.append(device.name)
            elif step.outcome == "ok":
                moved.append(device.name)
        if failed:
            line = f"rollback failed on {', '.join(failed)}; {_who_runs(running)}"
        elif not moved:
            line = f"nothing was rolled back (no device has a previous release to go back to); {_who_runs(running)}"
        elif len(set(running.values())) > 1:
            line = f"rolled back {', '.join(moved)}, but the fleet runs mixed releases: {_who_runs(running)}"
        else:
            line = f"rolled back: {_who_runs(running)}"
        passed = not failed and bool(moved) and len(set(running.values())) == 1
        log.record("end", outcome="ok" if passed else "failed", detail=line, running=running)
    finally:
        log.close()
    return Outcome(passed, line, running, log.path)


def _back(device: Device, running: dict[str, str | None]) -> Step:
    """One device's rollback: `current` to what `previous` names, then `previous` to what was current."""
    folder = DeviceFolder(device)
    current, previous = folder.links()
    running[device.name] = release_of(current)
    if previous is None:
        return Step("skipped", f"no previous release: left on {current or 'nothing'}")
    if not folder.has(previous):
        return Step("skipped", f"its previous release {previous} is gone: left on {current or 'nothing'}")
    folder.point({CURRENT: previous, **({PREVIOUS: current} if current else {})})
    running[device.name] = release_of(previous)
    return Step("ok", f"current -> {previous} (was {current or 'nothing'})",
                {"current": release_of(previous), "previous": release_of(current)})


def build_latency(bundle: Bundle) -> tuple[dict | None, str | None]:
    """The build's latency of the bundle's candidate, as p50_ms in the bundle's latency_unit, and the threads it was
    timed with, or None and why not: the p50 in the build report beside the bundle, or a language model's decode
    time per token from its manifest's speed (1000 / decode tokens/s)."""
    if bundle.language_model:
        speed = bundle.manifest.get("speed") or {}
        rate = speed.get("decode_tokens_per_s")
        if not isinstance(rate, (int, float)) or rate <= 0:
            return None, f"{bundle.path} records no decode rate (speed: decode_tokens_per_s)"
        return {"p50_ms": 1000 / rate, "threads": speed.get("threads")}, None
    path = bundle.folder.resolve().parent / REPORT
    if not path.is_file():
        return None, f"no {REPORT} beside the bundle ({path}), so no build-time p50 to compare with"
    try:
        report = json.loads(path.read_text())
        built = report["bundle"]
        entry = {f["path"]: f["sha256"] for f in built["files"]}.get(built["entry"])
        rows = {r["name"]: r for r in report["rows"]}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        return None, f"cannot read {path}: {first_line(e)}"
    if entry != next((f.sha256 for f in bundle.files if f.path == bundle.entry), None):
        return None, f"{path} is the report of another bundle (its {built['entry']} has another sha256)"
    latency = (rows.get(bundle.candidate) or {}).get("latency")
    if not latency:
        return None, f"{path} has no measured latency for {bundle.candidate} (not measured at build time)"
    return {"p50_ms": latency["p50_ms"], "threads": (report.get("machine") or {}).get("threads")}, None


def _yardstick(bundle: Bundle) -> str:
    """What build_latency gives for the bundle."""
    return "the build's decode rate" if bundle.language_model else "the build report's p50"


class _Rollout:
    def __init__(self, bundle: Bundle, release: str, fleet: Fleet, log: RolloutLog, build: dict | None,
                 no_build: str | None):
        self.bundle, self.release, self.fleet, self.log = bundle, release, fleet, log
        self.build, self.no_build = build, no_build      # build_latency's p50 and threads, or why there are none
        self.folders = {d.name: DeviceFolder(d) for d in fleet.devices}
        self.links: dict[str, tuple[str | None, str | None]] = {}

    @property
    def running(self) -> dict[str, str | None]:
        return {name: release_of(links[0]) for name, links in self.links.items()}

    def run(self, canaries: int) -> Outcome:
        for device in self.fleet.devices:
            failed = self._do("state", device, lambda d=device: self._state(d))
            if failed:
                return self._stop(f"cannot read the state of {device.name} ({failed}); nothing was changed")
        first, rest = self.fleet.devices[:canaries], self.fleet.devices[canaries:]
        for device in first:
            failed = (self._do("ship", device, lambda d=device: self._ship(d), role="canary")
                      or self._do("check", device, lambda d=device: self._check(d), role="canary")
                      or self._gate(device))
            if failed:
                return self._stop(f"canary {device.name} failed: {failed}; no device was switched, each stays on "
                                  "its previous release")
        for device in first:
            failed = self._do("switch", device, lambda d=device: self._switch(d), role="canary")
            if failed:
                return self._stop(f"stopped at canary {device.name}: {failed}; {_who_runs(self.running)}")
        for device in rest:
            failed = (self._do("ship", device, lambda d=device: self._ship(d))
                      or self._do("check", device, lambda d=device: self._check(d))
                      or self._do("switch", device, lambda d=device: self._switch(d)))
            if failed:
                return self._stop(f"stopped at {device.name}: {failed}; {_who_runs(self.running)}")
        return Outcome(True, f"rolled out {self.release} ({self.bundle.candidate}) to "
                             f"{len(self.fleet.devices)} device(s): {_who_runs(self.running)}",
                       self.running, self.log.path)

    def _stop(self, line: str) -> Outcome:
        return Outcome(False, line, self.running, self.log.path)

    def _do(self, step: str, device: Device, action: Callable[[], Step], role: str | None = None) -> str | None:
        """Run and log one step; None when it passed, else '<step>: <why>' for the closing line."""
        result = self.log.step(step, device, action, release=self.release, **({"role": role} if role else {}))
        return None if result.passed else f"{step}: {result.detail}"

    def _gate(self, device: Device) -> str | None:
        """A canary's on-device profile and its latency check, against the release the device runs (timed
        together with it) or else the build's own measurement (build_latency)."""
        link, why, comparable = self._baseline(device)
        timing = {"comparable": comparable}

        def profile() -> Step:
            thresholds, threads = self.fleet.thresholds, device.threads or (self.build or {}).get("threads")
            timed = self.folders[device.name].time([f"{RELEASES}/{self.release}", *([link] if link else [])],
                                                   thresholds.rounds, thresholds.measure_seconds, threads)
            canary, *others = timed["bundles"]
            current = others[0] if others and "error" not in others[0] else None
            alone = f"{why} cannot be timed there: {others[0]['error']}" if others and current is None else why
            timing.update(canary=canary, current=current, release=release_of(link), why=alone)
            numbers = {"rounds": timed["rounds"], "threads": timed["threads"], "input": canary["input"],
                       "unit": self.bundle.latency_unit,
                       "p50_ms": _median(canary["round_p50_ms"]), "p90_ms": _median(canary["round_p90_ms"]),
                       "round_p50_ms": canary["round_p50_ms"], "runs": sum(canary["runs"]),
                       "current": release_of(link) if current else None,
                       "current_round_p50_ms": current and current["round_p50_ms"]}
            detail = (f"p50 {self._ms(numbers['p50_ms'])}, p90 {numbers['p90_ms']:.4f} {self.bundle.latency_unit} "
                      f"({numbers['runs']} runs in {numbers['rounds']} rounds, {timed['threads'] or 'default'} "
                      "thread(s)), "
                      + (f"in alternating rounds with {why}, p50 {self._ms(_median(current['round_p50_ms']))}"
                         if current else f"alone: {alone}"))
            return Step("ok", detail, numbers)

        return (self._do("profile", device, profile, role="canary")
                or self._do("compare", device, lambda: self._compare(**timing), role="canary"))

    def _baseline(self, device: Device) -> tuple[str | None, str, bool]:
        """The link (relative to DEST) of the release the device runs, to time the canary with, and what it is;
        or None and why there is none, and whether the build's measurement may stand in (not when the release
        is of the other kind, whose timings count another unit)."""
        current, _ = self.links[device.name]
        if current is None:
            return None, "it runs no release yet", True
        runs = f"the release it runs ({release_of(current)})"
        if release_of(current) == self.release:
            return None, "it runs this release already", True
        folder = self.folders[device.name]
        if not folder.has(current):
            return None, f"{runs} is gone from it", True
        try:
            unit = Bundle(Path(folder.root) / current, folder.manifest(current)).latency_unit
        except EdgemlError as e:
            return None, f"{runs} cannot be read: {e}", True
        if unit != self.bundle.latency_unit:
            return None, f"{runs} is timed in {unit}, this bundle in {self.bundle.latency_unit}: not comparable", False
        return current, runs, True

    def _compare(self, canary: dict, current: dict | None, release: str | None, why: str, comparable: bool) -> Step:
        """The canary's slowdown: the median over rounds of its p50 / the baseline's, with a 95% CI over rounds;
        failed only when the CI's lower end is above max_latency_ratio."""
        limit, rounds = self.fleet.thresholds.max_latency_ratio, canary["round_p50_ms"]
        numbers = {"device_p50_ms": _median(rounds), "build_p50_ms": self.build and self.build["p50_ms"],
                   "unit": self.bundle.latency_unit, "rounds": len(rounds), "max_latency_ratio": limit}
        if not comparable:
            return Step("skipped", f"latency check skipped: {why}", numbers)
        if current is not None:
            baseline = current["round_p50_ms"]
            against = f"the release it runs, timed together ({release}: {self._ms(_median(baseline))})"
        elif self.build is not None:
            baseline = [self.build["p50_ms"]] * len(rounds)
            against = f"{_yardstick(self.bundle)}, timed elsewhere ({self._ms(self.build['p50_ms'])}, as {why})"
        else:
            return Step("skipped", f"latency check skipped: {self.no_build}; nor can it be timed against the "
                                   f"release the device runs: {why}", numbers)
        slowdown = round_speedup({"round_p50_ms": rounds}, {"round_p50_ms": baseline})
        ratio, (low, high) = slowdown["ratio"], slowdown["ci95"]
        numbers.update(baseline="current" if current else "build", baseline_release=current and release,
                       baseline_p50_ms=_median(baseline), ratio=ratio, ratio_ci95=slowdown["ci95"],
                       round_ratios=slowdown["rounds"])
        passed = low <= limit
        detail = (f"p50 {self._ms(numbers['device_p50_ms'])} is {ratio:.2f}x {against}: 95% CI {low:.2f}–{high:.2f}x "
                  f"over {len(rounds)} rounds, its lower end {'not above' if passed else 'above'} {limit:g}x")
        return Step("ok" if passed else "failed", detail, numbers)

    def _ms(self, ms: float) -> str:
        """A timing in the bundle's unit: '1.2345 ms', a language model's '1.2345 ms per token (810.0 tokens/s)'."""
        text = f"{ms:.4f} {self.bundle.latency_unit}"
        return f"{text} ({1000 / ms:.1f} tokens/s)" if self.bundle.language_model else text

    def _state(self, device: Device) -> Step:
        current, previous = self.links[device.name] = self.folders[device.name].links()
        return Step("ok", f"current: {current or 'none'}, previous: {previous or 'none'}",
                    {"current": release_of(current), "previous": release_of(previous)})

    def _ship(self, device: Device) -> Step:
        shipped = self.folders[device.name].ship(self.bundle.folder, self.release)
        return Step("ok", f"{shipped.destination} ({shipped.transfer}): sent {len(shipped.sent)} file(s), "
                          f"{len(shipped.kept)} already there; {shipped.verified} match the manifest's sha256",
                    {"transfer": shipped.transfer, "sent": shipped.sent, "kept": shipped.kept,
                     "verified": shipped.verified})

    def _check(self, device: Device) -> Step:
        option = self.bundle.self_check
        passed, output = self.folders[device.name].check(self.release, option)
        lines = output.splitlines()
        shown = [line for line in lines if "FAILED" in line or "error" in line.lower()] if not passed else lines
        return Step("ok" if passed else "failed", f"run.py {option}: {'; '.join(shown or lines[-1:])}",
                    {"output": lines})

    def _switch(self, device: Device) -> Step:
        target = f"{RELEASES}/{self.release}"
        current, _ = self.links[device.name]
        if current == target:
            return Step("ok", f"current is already {target}")
        self.folders[device.name].point({**({PREVIOUS: current} if current else {}), CURRENT: target})
        self.links[device.name] = (target, current)
        return Step("ok", f"current -> {target} (previous: {current or 'none'})",
                    {"current": self.release, "previous": release_of(current)})


def _who_runs(running: dict[str, str | None]) -> str:
    """'a, b run X; c runs nothing yet', grouped by release."""
    by_release: dict[str | None, list[str]] = {}
    for name, release in running.items():
        by_release.setdefault(release, []).append(name)
    return "; ".join(f"{', '.join(names)} run{'s' if len(names) == 1 else ''} {release or 'nothing yet'}"
                     for release, names in by_release.items())


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
