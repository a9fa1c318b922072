"""The release layout of `edgeml rollout` on one device, in a local folder or over SSH.

    DEST/releases/<bundle id>/   a bundle, shipped and verified by `edgeml ship`'s machinery
    DEST/current -> releases/<id>   what the device runs
    DEST/previous -> releases/<id>  what `current` was before the last switch (`--rollback` returns to it)

Both links are relative, so DEST can move. Each changes in one rename: a new link under a temporary
name, renamed over the old one (os.replace here, `mv -T` over SSH), so a reader always finds either
the old release or the new one, never no link. Every remote command is built with shlex.quote.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import replace
from pathlib import Path, PurePosixPath

from edgeml.bundle.folder import MANIFEST
from edgeml.deploy.fleet import Device
from edgeml.deploy.ship import ShipResult, Ssh, last_line, run_tool, ship
from edgeml.errors import EdgemlError, first_line
from edgeml.hashing import sha256_file
from edgeml.measure.latency import MeasureConfig

RELEASES, CURRENT, PREVIOUS = "releases", "current", "previous"
ID_LENGTH = 12
TIMING_SCRIPT = Path(__file__).with_name("device_timing.py")
ROUND_MIN_RUNS = 5        # timed runs of a release in each round, at least: a model of 0.5 s a call takes
                          # 9 rounds x 2 releases x 5 calls, not 20 calls a round


def bundle_id(bundle: Path) -> str:
    """A bundle's release name: the start of its manifest's sha256 (the manifest lists every file's sha256)."""
    return sha256_file(Path(bundle) / MANIFEST)[:ID_LENGTH]


def release_of(link: str | None) -> str | None:
    """The release id a `current`/`previous` link target names."""
    return None if link is None else PurePosixPath(link).name


class DeviceFolder:
    """DEST of one device: ship releases into it, run the device's Python in a release, switch its links."""

    def __init__(self, device: Device):
        self.device = device
        self.root = device.destination.path.rstrip("/") or "/"
        self.ssh = Ssh(device.destination, device.identity, device.ssh_options) if device.remote else None

    def ship(self, bundle: Path, release: str) -> ShipResult:
        releases = replace(self.device.destination, path=f"{self.root}/{RELEASES}")
        return ship(bundle, releases, identity=self.device.identity, ssh_options=self.device.ssh_options,
                    name=release)

    def links(self) -> tuple[str | None, str | None]:
        """The targets of `current` and `previous` (None where there is no such link)."""
        if self.ssh is None:
            return tuple(os.readlink(p) if os.path.islink(p) else None
                         for p in (os.path.join(self.root, CURRENT), os.path.join(self.root, PREVIOUS)))
        done = self.ssh.run(f"cd -- {shlex.quote(self.root)} 2>/dev/null || exit 0; "
                            f'printf "%s\\n" "$(readlink {CURRENT})" "$(readlink {PREVIOUS})"')
        lines = done.stdout.split("\n")
        return tuple((lines[i] or None) if i < len(lines) else None for i in (0, 1))

    def has(self, link: str) -> bool:
        """Whether the release `link` points at (relative to DEST) is there."""
        path = f"{self.root}/{link}"
        if self.ssh is None:
            return os.path.isfile(os.path.join(path, MANIFEST))
        return self.ssh.run(f"test -f {shlex.quote(f'{path}/{MANIFEST}')}", check=False).returncode == 0

    def point(self, links: dict[str, str]) -> None:
        """Point each link name (current, previous) at its target, each in one rename, in the order given."""
        if self.ssh is None:
            for name, target in links.items():
                temporary = os.path.join(self.root, f".{name}.new")
                try:
                    if os.path.lexists(temporary):
                        os.unlink(temporary)
                    os.symlink(target, temporary)
                    os.replace(temporary, os.path.join(self.root, name))
                except OSError as e:
                    raise EdgemlError(f"cannot switch {self.root}/{name}: {e.strerror or first_line(e)}") from None
            return
        steps = [f"cd -- {shlex.quote(self.root)}"]
        for name, target in links.items():
            steps.append(f"ln -sfn -- {shlex.quote(target)} .{name}.new && mv -T -- .{name}.new {name}")
        self.ssh.run(" && ".join(steps))

    def manifest(self, link: str) -> dict:
        """The manifest of the release `link` points at (relative to DEST); EdgemlError when it cannot be read."""
        path = f"{self.root}/{link}/{MANIFEST}"
        try:
            if self.ssh is None:
                return json.loads(Path(path).read_text())
            return json.loads(self.ssh.run(f"cat -- {shlex.quote(path)}").stdout)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EdgemlError(f"cannot read {path}: {first_line(e)}") from None

    def check(self, release: str, option: str) -> tuple[bool, str]:
        """The bundle's self-check in the release, `run.py OPTION` (Bundle.self_check) with the device's Python:
        (passed, its output)."""
        done = self._python(f"{RELEASES}/{release}", ["run.py", option])
        output = (done.stdout + done.stderr).strip()
        return done.returncode == 0, output or f"run.py {option} exited {done.returncode} without output"

    def time(self, links: list[str], rounds: int, seconds: float, threads: int | None) -> dict:
        """The releases at `links` (relative to DEST, the first the one timed) timed together in `rounds`
        alternating rounds of `seconds` / `rounds` each, in one process with the device's Python
        (device_timing.py, with each bundle's run.py): its output, each bundle's round p50s; EdgemlError if
        the first cannot be timed."""
        loop = MeasureConfig()
        args = ["-c", TIMING_SCRIPT.read_text(), str(rounds), f"{seconds / rounds:g}", f"{loop.warmup_seconds:g}",
                str(loop.min_warmup_runs), str(ROUND_MIN_RUNS), str(loop.max_runs), str(threads or 0),
                *(f"{self.root}/{link}" for link in links)]
        done = self._python(links[0], args)
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise EdgemlError(f"the timing failed (exit {done.returncode}): "
                              f"{last_line(done.stderr) or last_line(done.stdout) or 'no output'}") from None

    def _python(self, link: str, args: list[str]):
        """The device's Python run with `args` in the folder DEST/`link`."""
        folder = f"{self.root}/{link}"
        if self.ssh is None:
            return run_tool([self.device.python, *args], cwd=folder)
        return self.ssh.run(f"cd -- {shlex.quote(folder)} && {shlex.join([self.device.python, *args])}", check=False)
