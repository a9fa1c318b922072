"""`edgeml ship` against a real OpenSSH server on loopback, and to a local folder."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from edgeml.deploy.ship import parse_destination, ship
from edgeml.errors import EdgemlError
from edgeml.hashing import sha256_file


@pytest.fixture
def bundle(tmp_path, files) -> Path:
    """A bundle folder: a model, reference data and a nested file, all listed in its manifest."""
    folder = tmp_path / "digits-bundle"
    (folder / "extra").mkdir(parents=True)
    shutil.copy(files["digits.onnx"], folder / "model.onnx")
    shutil.copy(files["eval.npz"], folder / "reference.npz")
    (folder / "extra" / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    listed = [{"path": p.relative_to(folder).as_posix(), "sha256": sha256_file(p), "size": p.stat().st_size}
              for p in sorted(folder.rglob("*")) if p.is_file()]
    manifest = {"candidate": "onnxruntime-fp32", "backend": {"name": "onnxruntime"}, "entry": "model.onnx",
                "files": listed}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def _ship_cli(edgeml_cli, bundle, to, sshd, *extra):
    options = [a for k, v in sshd["options"].items() for a in ("--ssh-option", f"{k}={v}")]
    return edgeml_cli("ship", bundle, "--to", to, "-i", sshd["identity"], *options, *extra)


def _seed(bundle: Path, folder: Path) -> None:
    """The destination as an interrupted copy leaves it: some files intact, the model cut short."""
    shutil.copytree(bundle, folder)
    (folder / "reference.npz").unlink()
    data = (bundle / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("transfer", ["rsync", "scp"])
def test_ship_resumes_and_sends_only_missing_or_truncated_files(tmp_path, bundle, sshd, transfer):
    if transfer == "rsync" and not shutil.which("rsync"):
        pytest.skip("rsync not installed")
    remote = tmp_path / "device"
    _seed(bundle, remote / bundle.name)
    result = ship(bundle, f"{sshd['url']}{remote}", identity=sshd["identity"], ssh_options=sshd["options"],
                  transfer=transfer)
    assert result.transfer == transfer
    assert sorted(result.sent) == ["model.onnx", "reference.npz"]
    assert sorted(result.kept) == ["extra/labels.txt", "manifest.json"]
    assert result.verified == 4
    for p in bundle.rglob("*"):
        if p.is_file():
            assert sha256_file(remote / bundle.name / p.relative_to(bundle)) == sha256_file(p)
    again = ship(bundle, f"{sshd['url']}{remote}", identity=sshd["identity"], ssh_options=sshd["options"],
                 transfer=transfer)
    assert again.sent == [] and again.verified == 4


def test_ship_cli_over_ssh_reports_sent_files_and_missing_run_py(tmp_path, bundle, sshd, edgeml_cli):
    remote = tmp_path / "dev ice"                 # a space: remote paths must be quoted for the remote shell
    _seed(bundle, remote / bundle.name)
    result = _ship_cli(edgeml_cli, bundle, f"{sshd['url']}{remote}", sshd, "--verify-remote")
    assert result.exit_code == 0, result.output
    assert "sent: model.onnx, reference.npz" in result.output
    assert "already there, intact: extra/labels.txt, manifest.json" in result.output
    assert "4 files match the manifest's sha256" in result.output
    assert "no run.py" in result.output


def test_verify_remote_runs_run_py_check_there(tmp_path, bundle, sshd, edgeml_cli):
    (bundle / "run.py").write_text("import sys\nassert sys.argv[1:] == ['--check']\nprint('reference check: ok')\n")
    result = _ship_cli(edgeml_cli, bundle, f"{sshd['url']}{tmp_path}", sshd, "--verify-remote")
    assert result.exit_code == 0, result.output
    assert "reference check: ok" in result.output


def test_the_check_names_every_file_that_differs_or_is_missing(bundle):
    from edgeml.deploy.ship import ShipResult, _check

    expected = {p: sha256_file(bundle / p) for p in ("model.onnx", "reference.npz", "manifest.json")}
    result = ShipResult(parse_destination("/device"), "scp",
                        found={"model.onnx": "0" * 64, "manifest.json": expected["manifest.json"]})
    with pytest.raises(EdgemlError, match=r"do not match the manifest's sha256: model\.onnx, reference\.npz;"):
        _check(result, expected)


def test_ship_to_a_local_folder_resumes(tmp_path, bundle, edgeml_cli):
    _seed(bundle, tmp_path / "out" / bundle.name)
    result = edgeml_cli("ship", bundle, "--to", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "sent: model.onnx, reference.npz" in result.output
    assert sha256_file(tmp_path / "out" / bundle.name / "model.onnx") == sha256_file(bundle / "model.onnx")


def test_a_bundle_that_no_longer_matches_its_manifest_is_not_shipped(tmp_path, bundle, edgeml_cli):
    (bundle / "model.onnx").write_bytes(b"changed")
    result = edgeml_cli("ship", bundle, "--to", tmp_path / "out")
    assert result.exit_code == 2
    assert "model.onnx no longer match(es) the manifest" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url, message", [
    ("ftp://host/path", "use ssh://user@host"),
    ("ssh://host:99999/path", "port must be a number"),
    ("ssh://user@host", "give the folder on the device"),
    ("ssh://-oProxyCommand=x/path", "no usable host"),
])
def test_bad_urls_are_one_line_errors(bundle, edgeml_cli, url, message):
    result = edgeml_cli("ship", bundle, "--to", url)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreachable_host_is_one_line_error(bundle, edgeml_cli):
    with socket.socket() as s:                   # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = edgeml_cli("ship", bundle, "--to", f"ssh://nobody@127.0.0.1:{port}/tmp", "--ssh-option",
                        "BatchMode=yes")
    assert result.exit_code == 2
    assert "cannot reach nobody@127.0.0.1 over ssh" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_parse_destination():
    d = parse_destination("ssh://pi@10.0.0.5:2222/opt/models")
    assert (d.user, d.host, d.port, d.path) == ("pi", "10.0.0.5", 2222, "/opt/models")
    assert parse_destination("ssh://jetson/srv").port is None
    assert parse_destination(os.path.join("rel", "dir")).host is None


@pytest.mark.parametrize("text, user, host, path", [
    ("nobody@127.0.0.1:/srv/edgeml", "nobody", "127.0.0.1", "/srv/edgeml"),
    ("jetson:models", None, "jetson", "models"),              # relative to the login's home folder
    ("pi@jetson:~/models", "pi", "jetson", "models"),
    ("pi@[::1]:/opt", "pi", "::1", "/opt"),
    ("out:2024", None, "out", "2024"),                        # a colon before any slash: a host, as rsync reads it
    ("./out:2024", None, None, "out:2024"),                   # ./ makes it a local folder
    ("rel/dir:x", None, None, "rel/dir:x"),                   # a slash before the first colon: local
    ("me@home/folder", None, None, "me@home/folder"),
])
def test_destinations_are_read_as_rsync_reads_them(text, user, host, path):
    d = parse_destination(text)
    assert (d.user, d.host, d.path) == (user, host, path)
    assert parse_destination(str(d)) == d                     # printed as it reads back


@pytest.mark.parametrize("text, message", [
    ("pi@jetson:", "give the folder on the device, e.g. pi@jetson:/opt/models"),
    ("jetson::module", "host::module is an rsync daemon"),
    ("-oProxyCommand=x:/p", "no usable host"),
    ("pi@jetson:~other/x", "not ~user"),
])
def test_bad_scp_style_destinations_are_one_line_errors(bundle, edgeml_cli, tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    result = edgeml_cli("ship", bundle, "--to", text)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [bundle.name]


def test_ship_to_user_at_host_colon_path_goes_over_ssh(tmp_path, bundle, sshd, edgeml_cli, monkeypatch):
    """`user@host:/path` (no port in that form: --ssh-option Port=N) lands on the SSH side, no local folder here."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    login = sshd["url"].removeprefix("ssh://").rsplit(":", 1)[0]
    remote = tmp_path / "device"
    result = _ship_cli(edgeml_cli, bundle, f"{login}:{remote}", sshd, "--ssh-option", f"Port={sshd['port']}")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"to ssh://{login}{remote / bundle.name} " in result.output
    assert "verified: 4 files match" in result.output
    assert sha256_file(remote / bundle.name / "model.onnx") == sha256_file(bundle / "model.onnx")
    assert list(here.iterdir()) == []


def test_unreachable_user_at_host_colon_path_writes_nothing(tmp_path, bundle, edgeml_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:                   # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = edgeml_cli("ship", bundle, "--to", "nobody@127.0.0.1:/srv/edgeml", "--ssh-option", f"Port={port}",
                        "--ssh-option", "BatchMode=yes")
    assert result.exit_code == 2
    assert f"cannot reach nobody@127.0.0.1 over ssh (port {port})" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [bundle.name]      # no folder named nobody@127.0.0.1:


def test_a_local_folder_that_cannot_be_made_is_one_line_error(tmp_path, bundle, edgeml_cli):
    (tmp_path / "file").write_text("not a folder")
    result = edgeml_cli("ship", bundle, "--to", tmp_path / "file" / "out")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot write {tmp_path / 'file' / 'out' / bundle.name}")
    assert len(result.stderr.strip().splitlines()) == 1
