"""The files a report is rendered from: a run's report.json, and a device report to merge into it."""

from __future__ import annotations

import json
from pathlib import Path

from edgeml.errors import EdgemlError


def load_run(folder: Path) -> tuple[dict, str]:
    """The run record in FOLDER/report.json (the OUT of `edgeml optimize`), and its text as written."""
    if not folder.is_dir():
        raise EdgemlError(f"{folder} is not a folder: give the OUT folder of `edgeml optimize`")
    path = folder / "report.json"
    if not path.is_file():
        raise EdgemlError(f"{folder} has no report.json: give the OUT folder of `edgeml optimize`")
    text = path.read_text()
    try:
        run = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgemlError(f"{path} is not valid JSON ({e}): rerun `edgeml optimize` to write it again") from e
    if not isinstance(run, dict) or not {"rows", "selection", "data", "target"} <= run.keys():
        raise EdgemlError(f"{path} is not the record of an `edgeml optimize` run (prune and distill reports "
                          "are rendered in their report.md)")
    return run, text


def load_device_report(path: Path) -> dict:
    """A device report written by `edgeml profile`."""
    try:
        device = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgemlError(f"cannot read the device report {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(device, dict) or device.get("format") != "edgeml-device-report":
        raise EdgemlError(f"{path} is not a device report: write one with `edgeml profile BUNDLE` on the device")
    return device


def merge_device_report(run: dict, device: dict) -> dict:
    """The run with `device_report` added, when the device timed this run's bundled artifact."""
    if device.get("kind") == "language-model":
        raise EdgemlError("the device report times a language model's bundle, which a report does not merge: read "
                          "its decode tokens/s and time to first token beside the run's report.md")
    bundle = run.get("bundle") or {}
    entry = next((f["sha256"] for f in bundle.get("files", []) if f["path"] == bundle.get("entry")), None)
    timed = device["bundle"]
    if timed["candidate"] != bundle.get("candidate") or timed["entry_sha256"] != entry:
        raise EdgemlError(f"the device report timed {timed['candidate']} ({timed['entry']} sha256 "
                          f"{timed['entry_sha256'][:12]}), not this run's bundle ({bundle.get('candidate')}, "
                          f"sha256 {(entry or '?')[:12]}): profile the bundle of this run")
    return {**run, "device_report": device}
