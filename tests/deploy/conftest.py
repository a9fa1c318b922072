"""A real OpenSSH server on loopback, for the tests of `edgeml ship` and `edgeml rollout`."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd on a free loopback port, with a throwaway host key and a user key for the current user: a dict with
    the ssh:// URL of this user there, the key (identity), the ssh options a client needs, and the port."""
    if not SSHD.exists():
        pytest.skip("OpenSSH server not installed (/usr/sbin/sshd); .ci/run installs it with apt-get")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no", "UsePAM no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        "Subsystem sftp internal-sftp", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)       # privilege separation folder sshd insists on
    with open(d / "sshd.log", "wb") as log:      # a file, not a pipe nobody reads: many logins would fill it
        server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    options = {"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null", "BatchMode": "yes",
               "LogLevel": "ERROR"}
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield {"url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "identity": d / "user_key", "options": options,
           "port": port}
    server.terminate()
    server.wait(timeout=10)
