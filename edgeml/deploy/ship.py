"""`edgeml ship`: copy a bundle to a device over SSH (or to a folder), resumably, and verify it there.

A destination is read as rsync reads it: `[user@]host:path` (a colon before any slash) and
`ssh://[user@]host[:port]/path` are SSH, anything else a local folder (`./a:b` is one).

Only OpenSSH's own tools run: rsync over ssh when both ends have rsync (`--partial --checksum`,
so an interrupted copy resumes and intact files are not sent again), else scp for the files whose
remote sha256 is missing or wrong. Either way the copy is then checked file by file against the
sha256 in the bundle's manifest. Every command is an argument list; the few strings a remote
shell reads are built with shlex.quote.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edgeml.bundle.folder import MISSING, Bundle
from edgeml.errors import EdgemlError, first_line
from edgeml.hashing import sha256_file

CONNECT_TIMEOUT_S = 15
TRANSFERS = ("auto", "rsync", "scp")
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
USER = re.compile(r"[^:/\[]*@")          # up to the last @ before any colon, slash or bracket, as rsync reads it


@dataclass(frozen=True)
class Destination:
    """Where a bundle goes: a local folder (host None) or a folder on an SSH host."""
    path: str
    host: str | None = None
    user: str | None = None
    port: int | None = None

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def remote(self) -> str:
        """`login:` as scp and rsync read it (an IPv6 address in brackets), to put a path after."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:" if self.user else f"{host}:"

    def __str__(self) -> str:
        if self.host is None:                         # ./a:b, not a:b, which would name host a
            return f"./{self.path}" if _host_form(self.path) else self.path
        if not self.path.startswith("/"):             # relative to the login's home folder: only scp's form says so
            return f"{self.remote}{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        login = f"{self.user}@{host}" if self.user else host
        return f"ssh://{login}{f':{self.port}' if self.port else ''}{self.path}"


@dataclass
class ShipResult:
    destination: Destination          # the bundle's folder on the device
    transfer: str                     # rsync | scp | copy
    sent: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)     # already there and intact: not sent again
    found: dict[str, str] = field(default_factory=dict)   # sha256 per file at the destination, after the copy
    verified: int = 0                 # files whose sha256 there matches
    remote_check: str | None = None   # the output of `run.py --check` there (--verify-remote)


def parse_destination(text: str, what: str = "--to") -> Destination:
    """`ssh://[user@]host[:port]/path`, `[user@]host:path` or a local folder; `what` names the setting in errors.

    As rsync and scp read a destination: a colon before any slash names a host (`./a:b` is a local folder).
    """
    if URL.match(text):
        return _parse_url(text, what)
    remote = _host_form(text)
    if remote is None:
        return Destination(str(Path(text).expanduser()))
    user, host, path = remote
    example = f"{user + '@' if user else ''}{host}:/opt/models"
    if path.startswith(":"):
        raise EdgemlError(f"{what} {text}: host::module is an rsync daemon, which ship does not use; give "
                          f"{example} (over ssh), or ./{text} for a local folder")
    if not host or host.startswith("-") or (user or "").startswith("-") or re.search(r"\s", host + (user or "")):
        raise EdgemlError(f"{what} {text}: no usable host; use user@host:/path or ssh://user@host[:port]/path "
                          f"(./{text} for a local folder)")
    if path == "~" or path.startswith("~/"):          # the home folder: where ssh, scp and rsync start anyway
        path = path[2:]
    elif path.startswith("~"):
        raise EdgemlError(f"{what} {text}: give an absolute path or one relative to the home folder, not ~user")
    if path.strip("/") == "":
        raise EdgemlError(f"{what} {text}: give the folder on the device, e.g. {example}")
    return Destination(path, host, user or None)


def _host_form(text: str) -> tuple[str, str, str] | None:
    """(user, host, path) when `text` is `[user@]host:path` (a colon before any slash), else None: a local path."""
    user = USER.match(text)
    rest = text[user.end():] if user else text
    if rest.startswith("["):                          # [IPv6]:path
        close = rest.find("]")
        if close < 0 or rest[close + 1:close + 2] != ":" or "/" in rest[:close]:
            return None
        host, path = rest[1:close], rest[close + 2:]
    else:
        stop = re.search(r"[:/]", rest)
        if stop is None or stop.group() == "/":
            return None
        host, path = rest[:stop.start()], rest[stop.end():]
    return (user.group()[:-1] if user else ""), host, path


def _parse_url(text: str, what: str) -> Destination:
    url = urlsplit(text)
    if url.scheme != "ssh":
        raise EdgemlError(f"{what} {text}: use ssh://user@host[:port]/path, user@host:/path or a local folder")
    try:
        port = url.port
    except ValueError:
        raise EdgemlError(f"{what} {text}: the port must be a number from 1 to 65535") from None
    host, user, path = url.hostname, url.username and unquote(url.username), unquote(url.path)
    if not host or host.startswith("-") or (user or "").startswith("-"):
        raise EdgemlError(f"{what} {text}: no usable host; use ssh://user@host[:port]/path")
    if url.password is not None or url.query or url.fragment:
        raise EdgemlError(f"{what} {text}: no password, query or fragment; use -i/--identity for the key")
    if path in ("", "/"):
        raise EdgemlError(f"{what} {text}: give the folder on the device, e.g. ssh://{url.netloc}/opt/models")
    return Destination(path, host, user, port)


def ship(bundle: Path | str, to: str | Destination, *, identity: Path | str | None = None,
         ssh_options: dict[str, str] | None = None, verify_remote: bool = False, transfer: str = "auto",
         name: str | None = None) -> ShipResult:
    """Copy BUNDLE into the folder `to` names (as `name` there, default BUNDLE's own name) and verify it by sha256.

    `transfer`: auto (rsync when both ends have it, else scp), or rsync / scp to insist on one.
    Raises EdgemlError naming the files that differ, or when the device cannot be reached.
    """
    bundle = Path(bundle).resolve()
    name = name or bundle.name
    expected = _expected_hashes(Bundle.open(bundle, fields=True))
    target = to if isinstance(to, Destination) else parse_destination(to)
    if transfer not in TRANSFERS:
        raise EdgemlError(f"transfer {transfer!r}: use one of {', '.join(TRANSFERS)}")
    ssh = None if target.host is None else Ssh(target, identity, ssh_options or {})
    if ssh is None:
        result = _copy_local(bundle, Path(target.path) / name, expected)
    else:
        result = ssh.ship(bundle, name, expected, transfer)
    _check(result, expected)
    if verify_remote:
        result.remote_check = _reference_check(bundle, result.destination, ssh)
    return result


def _expected_hashes(bundle: Bundle) -> dict[str, str]:
    """sha256 per relative path: the manifest's for its files, this copy's for the rest (manifest.json, ...)."""
    checks = bundle.check_files()
    missing = sorted(c.path for c in checks if c.problem in MISSING)
    if missing:
        raise EdgemlError(f"{bundle.folder} lacks {', '.join(missing)}, listed in its manifest: rebuild the bundle")
    changed = sorted(c.path for c in checks if not c.ok)
    if changed:
        raise EdgemlError(f"{bundle.folder}: {', '.join(changed)} no longer match(es) the manifest's sha256 here: "
                          "rebuild the bundle rather than ship it")
    listed = {f.path: f.sha256 for f in bundle.files}
    present = {p.relative_to(bundle.folder).as_posix(): p for p in sorted(bundle.folder.rglob("*")) if p.is_file()}
    return {rel: listed.get(rel) or sha256_file(path) for rel, path in present.items()}


def _check(result: ShipResult, expected: dict[str, str]) -> None:
    """Raise naming every file whose copy is missing or has another sha256."""
    wrong = [p for p, h in expected.items() if result.found.get(p) != h]
    if wrong:
        raise EdgemlError(f"copied to {result.destination}, but these files there do not match the manifest's "
                          f"sha256: {', '.join(wrong)}; run ship again")
    result.verified = len(expected)


def _copy_local(bundle: Path, folder: Path, expected: dict[str, str]) -> ShipResult:
    result = ShipResult(Destination(str(folder)), "copy")
    for rel, digest in expected.items():
        target = folder / rel
        if target.is_file() and sha256_file(target) == digest:
            result.kept.append(rel)
            continue
        partial = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / rel, partial)
            os.replace(partial, target)
        except OSError as e:
            raise EdgemlError(f"cannot write {target}: {e.strerror or first_line(e)}") from None
        result.sent.append(rel)
    result.found = {rel: sha256_file(folder / rel) for rel in expected if (folder / rel).is_file()}
    return result


class Ssh:
    """ssh, scp and rsync argument lists for one destination."""

    def __init__(self, target: Destination, identity: Path | str | None, options: dict[str, str]):
        self.target = target
        self.port = target.port or next((v for k, v in options.items() if k.lower() == "port"), None)
        self.options = ["-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"] if "ConnectTimeout" not in options else []
        for key, value in options.items():
            self.options += ["-o", f"{key}={value}"]
        if identity is not None:
            if not Path(identity).is_file():
                raise EdgemlError(f"--identity {identity}: no such key file")
            self.options += ["-i", str(identity)]

    def ssh_args(self) -> list[str]:
        return ["ssh", *(["-p", str(self.target.port)] if self.target.port else []), *self.options]

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `command` (a remote shell line, built with shlex.quote) on the device."""
        done = run_tool([*self.ssh_args(), "--", self.target.login, command])
        if done.returncode == 255:
            raise EdgemlError(f"cannot reach {self.target.login} over ssh"
                              f"{f' (port {self.port})' if self.port else ''}: "
                              f"{last_line(done.stderr) or 'ssh exited 255'}")
        if check and done.returncode != 0:
            raise EdgemlError(f"on {self.target.host}, `{command}` failed: {last_line(done.stderr)}")
        return done

    def ship(self, bundle: Path, name: str, expected: dict[str, str], transfer: str) -> ShipResult:
        folder = f"{self.target.path.rstrip('/')}/{name}"
        self.run(f"mkdir -p -- {shlex.quote(folder)}")
        if transfer == "auto":
            remote_rsync = self.run("command -v rsync", check=False).returncode == 0
            transfer = "rsync" if shutil.which("rsync") and remote_rsync else "scp"
        result = ShipResult(Destination(folder, self.target.host, self.target.user, self.target.port), transfer)
        if transfer == "rsync":
            result.sent = self._rsync(bundle, folder)
            result.found = self.hashes(folder, list(expected))
        else:
            before = self.hashes(folder, list(expected))
            result.sent = [p for p, h in expected.items() if before.get(p) != h]
            self._scp(bundle, folder, result.sent)
            result.found = {**before, **self.hashes(folder, result.sent)}
        result.kept = [p for p in expected if p not in result.sent]
        return result

    def hashes(self, folder: str, paths: list[str]) -> dict[str, str]:
        """sha256 per path of the files that exist in `folder` on the device (sha256sum there)."""
        if not paths:
            return {}
        listed = " ".join(shlex.quote(p) for p in paths)
        done = self.run(f"cd {shlex.quote(folder)} && sha256sum -- {listed} 2>/dev/null; true")
        found = {}
        for line in done.stdout.splitlines():
            digest, _, name = line.partition("  ")
            if name in paths:
                found[name] = digest.lstrip("\\")
        return found

    def _rsync(self, bundle: Path, folder: str) -> list[str]:
        """rsync the bundle; the files it sent, from its --itemize-changes lines ('<f...' = sent)."""
        args = ["rsync", "--recursive", "--links", "--perms", "--times", "--partial", "--checksum",
                "--itemize-changes", "--protect-args", "-e", shlex.join(self.ssh_args()),
                f"{bundle}/", f"{self.target.remote}{folder}/"]
        done = run_tool(args)
        if done.returncode != 0:
            raise EdgemlError(f"rsync to {self.target.host} failed (exit {done.returncode}): "
                              f"{last_line(done.stderr)}; run ship again to resume")
        return [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line[:2] in ("<f", ">f")]

    def _scp(self, bundle: Path, folder: str, paths: list[str]) -> None:
        subfolders = sorted({str(Path(p).parent) for p in paths} - {"."})
        if subfolders:
            self.run("mkdir -p -- " + " ".join(shlex.quote(f"{folder}/{d}") for d in subfolders))
        port = ["-P", str(self.target.port)] if self.target.port else []
        for rel in paths:
            done = run_tool(["scp", "-q", "-p", *port, *self.options, "--", str(bundle / rel),
                             f"{self.target.remote}{folder}/{rel}"])
            if done.returncode != 0:
                raise EdgemlError(f"scp of {rel} to {self.target.host} failed: {last_line(done.stderr)}; "
                                  "run ship again to resume")


def _reference_check(bundle: Path, destination: Destination, ssh: Ssh | None) -> str:
    """Run the bundle's self-check (`run.py --check`; a language model's: `--verify`, its reference answers) where it
    was copied; its output, or why none ran."""
    if not (bundle / "run.py").is_file():
        return ("not run: this bundle has no run.py (bundles from `edgeml pack` carry one), so there is no "
                "reference check to run on the device")
    option = Bundle.open(bundle).self_check
    if ssh is None:
        done = run_tool([sys.executable, "run.py", option], cwd=destination.path)
    else:
        done = ssh.run(f"cd {shlex.quote(destination.path)} && python3 run.py {option}", check=False)
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise EdgemlError(f"the reference check on {destination.host or 'this machine'} failed (exit "
                          f"{done.returncode}): {last_line(output)}")
    return output


def run_tool(args: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run a tool; when interrupted, stop it with SIGTERM so that rsync keeps what it sent (--partial)."""
    try:
        process = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise EdgemlError(f"`{args[0]}` is not installed here: install OpenSSH's client (and rsync)") from None
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
