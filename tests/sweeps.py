"""What the sweep tests share: the processes of a test's Ray, and running `edgeml sweep` as a separate process."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
EXAMPLE = Path(__file__).parent.parent / "examples" / "sweep.yaml"


class RayProcesses:
    """The environment for a test's Ray processes, and what finds and kills them (through /proc)."""

    def __init__(self):
        # short: Ray's socket paths live under it and must stay under 108 characters
        self.tmpdir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        self.env = {**os.environ, "RAY_TMPDIR": self.tmpdir, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(16)}

    def find(self, **marks: str) -> list[int]:
        """This test's live processes (those whose environment also has `marks`)."""
        wanted = [f"{k}={v}".encode() for k, v in {"RAY_TMPDIR": self.tmpdir, **marks}.items()]
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if all(w in environ for w in wanted):
                found.append(int(pid))
        return found

    def kill(self, **marks: str) -> None:
        """SIGKILL this test's processes (with `marks`), and wait until they are gone."""
        pids = self.find(**marks)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not set(pids) & set(self.find(**marks)), 20, "killed processes to end")

    def run_cells(self, **marks: str) -> list[int]:
        """The Ray workers running a sweep cell now."""
        cells = []
        for pid in self.find(**marks):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::run_cell"):
                    cells.append(pid)
            except OSError:
                pass
        return cells


def sweep_command(sweep_file: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edgeml", "sweep", str(sweep_file), "-o", str(out), *args]


def cells_run(stderr: str) -> set[str]:
    """The cells a sweep ran, from its lines `✓ CELL: ...` and `✗ CELL: ...`."""
    return {line[2:].split(": ")[0] for line in stderr.splitlines() if line[:2] in ("✓ ", "✗ ")}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
