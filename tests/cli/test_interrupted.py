"""Interrupted and repeated runs: after kill -9 at a random moment OUT is absent or complete
(with --force: the old or the new complete output), a rerun without --force refuses, and the
leftovers of killed runs are removed by the next run into the same OUT."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeml import outdir
from edgeml.errors import OutputError
from edgeml.outdir import AtomicOutput

SETTINGS = ["--target", "cpu", "--precision", "fp32", "--threads", "1", "--measure-seconds", "0.05"]
LANES = 2            # runs killed side by side, one OUT each
KILL_TRIALS = 20
FORCE_TRIALS = 6
REACH = 1.2          # kill delays span this multiple of a run's duration: some land after it finished
SEED = 20240607
COMPLETE = ("report.json", "report.md", "bundle/manifest.json")


@dataclass
class Trial:
    lane: int
    delay: float
    finished: bool      # the run ended by itself before its kill was due
    state: str          # absent | complete | old | new | other
    kept: Path | None   # a copy of the complete output, verified at the end
    leftovers: int      # stale hidden folders of OUT right after this trial


@dataclass
class Setup:
    optimize: list[str]  # the command line, without -o
    env: dict
    parent: Path         # holds out0, out1: complete outputs
    duration: float      # seconds a run takes here, with LANES runs side by side


def _run(setup: Setup, out: Path, log: Path, delay: float = 600, force: bool = False) -> bool:
    """Run optimize into OUT; SIGKILL it (and its children) after `delay` s. True if it ended by itself."""
    with open(log, "w") as stderr:
        proc = subprocess.Popen(setup.optimize + ["-o", str(out)] + (["--force"] if force else []),
                                env=setup.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
    try:
        code = proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
    assert code == 0, log.read_text()
    return True


def _complete(out: Path) -> bool:
    return out.is_dir() and all((out / f).is_file() for f in COMPLETE)


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        h.update(str(p.relative_to(out)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _delays(duration: float, n: int) -> list[list[float]]:
    """n seeded kill delays, one in each of n equal slices of [0, REACH * duration], dealt to the lanes
    in turn (so their total waits are alike), each lane's in random order."""
    rng = random.Random(SEED + n)
    delays = [(i + rng.random()) / n * REACH * duration for i in range(n)]
    lanes = [delays[lane::LANES] for lane in range(LANES)]
    for lane in lanes:
        rng.shuffle(lane)
    return lanes


def _verified(edgeml_cli, trials: list[Trial]) -> None:
    for t in trials:
        if t.kept is not None:
            result = edgeml_cli("verify", t.kept / "bundle")
            if result.exit_code != 0:
                t.state = "other"
                print(result.output)


def _report(title: str, trials: list[Trial], duration: float) -> None:
    for i, t in enumerate(trials):
        ended = "ended by itself" if t.finished else "killed"
        print(f"{title} {i:2d} (lane {t.lane}): kill due at {t.delay:5.2f} s of a ~{duration:.1f} s run, "
              f"{ended}: OUT {t.state}, {t.leftovers} stale leftover(s)")


@pytest.fixture(scope="module")
def setup(files, tmp_path_factory):
    """The fastest optimize run (the digits CNN as ONNX, FP32 candidates only), timed while it makes
    out0 and out1 side by side."""
    work = tmp_path_factory.mktemp("interrupted")
    parent = work / "runs"
    for d in (parent, work / "tmp"):
        d.mkdir()
    setup = Setup([sys.executable, "-m", "edgeml", "optimize", str(files["digits.onnx"]),
                   "--calib-data", str(files["calib.npz"]), "--eval-data", str(files["eval.npz"]), *SETTINGS],
                  {**os.environ, "TMPDIR": str(work / "tmp")}, parent, 0.0)

    def timed(lane):
        start = time.monotonic()
        _run(setup, parent / f"out{lane}", work / f"reference{lane}.log")
        return time.monotonic() - start
    with ThreadPoolExecutor(LANES) as pool:
        setup.duration = max(pool.map(timed, range(LANES)))
    assert all(_complete(parent / f"out{lane}") for lane in range(LANES))
    return setup


def test_existing_out_refused_without_force(setup):
    out = setup.parent / "out0"
    before = _digest(out)
    proc = subprocess.run(setup.optimize + ["-o", str(out)], env=setup.env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--force" in lines[0], proc.stderr
    assert _digest(out) == before
    assert _hidden(out) == []


def test_kill9_force_keeps_old_or_new(setup, edgeml_cli, tmp_path):
    for n in range(LANES):
        assert edgeml_cli("verify", setup.parent / f"out{n}" / "bundle").exit_code == 0

    def lane(lane, delays):
        out = setup.parent / f"out{lane}"
        old = _digest(out)
        trials = []
        for k, delay in enumerate(delays):
            finished = _run(setup, out, tmp_path / f"force{lane}-{k}.log", delay, force=True)
            kept = None
            if not out.exists():
                state = "other"
            elif _digest(out) == old:
                state = "old"
            elif _complete(out):
                state, old = "new", _digest(out)
                kept = shutil.copytree(out, tmp_path / f"force{lane}-{k}")
            else:
                state = "other"
            trials.append(Trial(lane, delay, finished, state, kept, len(_hidden(out))))
        return trials
    with ThreadPoolExecutor(LANES) as pool:
        trials = [t for lane_trials in pool.map(lane, range(LANES), _delays(setup.duration, FORCE_TRIALS))
                  for t in lane_trials]
    _verified(edgeml_cli, trials)
    _report("--force trial", trials, setup.duration)
    counts = {s: sum(t.state == s for t in trials) for s in ("old", "new", "other")}
    print(f"kill -9 --force trials: {len(trials)}, old OUT kept: {counts['old']}, "
          f"new OUT complete and verified: {counts['new']}, other: {counts['other']}")
    assert len(trials) == FORCE_TRIALS and counts["other"] == 0


def test_kill9_leaves_out_absent_or_complete(setup, edgeml_cli, tmp_path):
    keep = tmp_path / "kept"
    keep.mkdir()

    def lane(lane, delays):
        out = tmp_path / f"fresh{lane}"
        trials, stale = [], set()
        for k, delay in enumerate(delays):
            finished = _run(setup, out, tmp_path / f"fresh{lane}-{k}.log", delay)
            kept = None
            if not os.path.lexists(out):
                state = "absent"
            elif _complete(out):
                state = "complete"
                assert _hidden(out) == [], "a run that got through left the leftovers of killed runs"
                kept = keep / f"{lane}-{k}"
                out.rename(kept)
            else:
                state = "other"
            stale.update(_hidden(out))
            trials.append(Trial(lane, delay, finished, state, kept, len(_hidden(out))))
        return trials, stale
    with ThreadPoolExecutor(LANES) as pool:
        lanes = list(pool.map(lane, range(LANES), _delays(setup.duration, KILL_TRIALS)))
    trials = [t for lane_trials, _ in lanes for t in lane_trials]
    stale = set().union(*(s for _, s in lanes))
    for n in range(LANES):
        out = tmp_path / f"fresh{n}"
        shutil.rmtree(out, ignore_errors=True)
        with AtomicOutput(out):
            pass
        assert _hidden(out) == []
    _verified(edgeml_cli, trials)
    _report("trial", trials, setup.duration)
    counts = {s: sum(t.state == s for t in trials) for s in ("absent", "complete", "other")}
    print(f"kill -9 trials: {len(trials)}, OUT absent: {counts['absent']}, "
          f"complete and verified: {counts['complete']}, other: {counts['other']}")
    print(f"stale staging folders left by killed runs: {len(stale)}, all removed by the next run into OUT")
    assert len(trials) == KILL_TRIALS and counts["other"] == 0
    assert counts["absent"] >= 1 and counts["complete"] >= 1


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_next_run_removes_only_dead_runs_leftovers(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    out = tmp_path / "out"
    names = {f".out.partial-{dead}": False, f".out.old-{dead}": False, f".out.partial-{os.getpid()}": False,
             f".out.partial-{live}": True,
             f".other.partial-{dead}": True, f".out.partial-{dead}x": True, f".out.copy-{dead}": True}
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    out.mkdir()
    with AtomicOutput(out, force=True) as staging:
        (staging / "new").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out"] + [n for n, kept in names.items() if kept])
    assert [p.name for p in out.iterdir()] == ["new"]


def test_old_output_of_a_dead_run_is_restored(tmp_path):
    """Without renameat2, a run killed between its two renames leaves OUT absent and `.OUT.old-PID`."""
    out = tmp_path / "out"
    old = tmp_path / f".out.old-{_dead_pid()}"
    old.mkdir()
    (old / "f").write_text("old")
    with pytest.raises(OutputError, match="already exists"):
        AtomicOutput(out).__enter__()
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "f").read_text() == "old"


@pytest.mark.parametrize("swap", [True, False], ids=["renameat2", "two-renames"])
def test_force_replaces(tmp_path, monkeypatch, swap):
    if swap:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        if not outdir._exchange(tmp_path / "a", tmp_path / "b"):
            pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
        (tmp_path / "a").rmdir()
        (tmp_path / "b").rmdir()
    else:
        monkeypatch.setattr(outdir, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")
    with AtomicOutput(out, force=True) as staging:
        (staging / "new").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["new"]
