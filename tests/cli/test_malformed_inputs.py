"""A corpus of malformed inputs, each with its exact outcome.

Every case builds one bad input in tmp_path and runs `edgeml`. The outcome must be exit code 2
(user error) or 1 (internal error, with a hint to report it), exactly one error line on stderr, no
traceback, OUT as it was before (absent, or untouched) and no staging folder left behind. Cases
that carry code (pickles, YAML tags) also check that the code never ran.

`pytest -s tests/test_malformed_inputs.py` prints the table of outcomes at the end.
"""

from __future__ import annotations

import json
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from archives import link, malicious
from click.testing import CliRunner

MARKER = "PWNED"
ESCAPED = "edgeml-escaped"       # what a malicious archive would write outside its folder
# Quick settings first: a case's own flags come later on the command line and win.
QUICK = {"optimize": ["--threads", "1", "--measure-seconds", "0.05", "--precision", "fp32"]}
WRITES_OUT = ("optimize", "quantize", "prune", "distill", "benchmark")
RESULTS: list[tuple[str, str, str]] = []


class TinyNet(torch.nn.Module):
    """Two layers over a 1x4x4 "image": three classes."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)

    def forward(self, input):
        return self.fc2(torch.relu(self.fc1(input.flatten(1))))


class Payload:
    """Pickles to a call that creates the marker file: proof of code execution if unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny model as ONNX, .pt2 and TorchScript; DigitsCNN weights for the factory; good data."""
    from edgeml.examples import DigitsCNN

    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(2, 1, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(d / "tiny.onnx"), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
        program = torch.export.export(model, (x,), dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
        torch.export.save(program, str(d / "tiny.pt2"))
        torch.jit.trace(model, x).save(str(d / "tiny.ts"))
    torch.save(DigitsCNN().state_dict(), d / "digits_weights.pt")
    np.savez(d / "calib.npz", input=_images(16, seed=1), labels=np.arange(16) % 3)
    np.savez(d / "eval.npz", input=_images(16, seed=2), labels=np.arange(16) % 3)
    return {p.name: p for p in d.iterdir()}


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


# Builders: each writes its bad input into `tmp` and returns the command line.

def _onnx(tiny, *extra):
    return ["optimize", tiny["tiny.onnx"], *extra]


def _factory(*extra):
    return ["optimize", "edgeml.examples:DigitsCNN", "--input-shape", "input:1x1x8x8", *extra]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:16] + b"\xff" * 64 + data[80:middle] + bytes(b ^ 0x5A for b in data[middle:])


def _external_data(tmp: Path, tiny, how: str) -> Path:
    """The tiny ONNX model with its weights in a file beside it, then the file moved or linked away."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    folder = tmp / "model"
    folder.mkdir()
    model = onnx.load(str(tiny["tiny.onnx"]))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save_model(model, str(folder / "m.onnx"))
    secret = tmp / "secret.bin"
    shutil.move(folder / "weights.bin", secret)
    if how == "link":
        (folder / "weights.bin").symlink_to(secret)
        return folder / "m.onnx"
    location = {"dotdot": "../secret.bin", "absolute": str(secret), "missing": "weights.bin"}[how]
    model = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(folder / "m.onnx"))
    return folder / "m.onnx"


def _pt2_edited(tmp: Path, tiny, edit: Callable[[str, bytes], bytes]) -> Path:
    """A copy of tiny.pt2 with its members rewritten by `edit(name, data)`."""
    path = tmp / "edited.pt2"
    with zipfile.ZipFile(tiny["tiny.pt2"]) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, edit(name, src.read(name)))
    return path


def _other_torch(name: str, data: bytes) -> bytes:
    if not name.endswith("models/model.json"):
        return data
    model = json.loads(data)
    model.update(schema_version={"major": 99, "minor": 0}, torch_version="9.0.0")
    return json.dumps(model).encode()


def _torch_saved(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _npz(tmp: Path, name: str = "data.npz", **arrays) -> Path:
    np.savez(tmp / name, **arrays)
    return tmp / name


def _with(values: np.ndarray, index: tuple, value: float) -> np.ndarray:
    values = values.copy()
    values[index] = value
    return values


def _broken_image_folder(tmp: Path) -> Path:
    """Two classes of 4x4 gray images, one of them cut short."""
    from PIL import Image

    root = tmp / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(root / label / f"{i}.png")
    broken = root / "b" / "1.png"
    broken.write_bytes(broken.read_bytes()[:20])
    return root


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _profile(tmp: Path, text: str) -> Path:
    return _write(tmp / "device.yaml", text.encode())


def _recipe(tmp: Path, text: str) -> Path:
    return _write(tmp / "recipe.yaml", text.encode())


def _archive(tmp: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    return malicious(tmp / "x.edgeml.tar.gz", member, data)


def _existing_out(tmp: Path, tiny) -> list:
    out = tmp / "runs" / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    return _onnx(tiny)


PROFILE_WRONG_TYPES = (Path(__file__).parents[2] / "profiles" / "raspberry-pi-5.yaml").read_text().replace(
    "memory_gb: ", "memory_gb: plenty # ", 1)


@dataclass
class Case:
    name: str
    build: Callable[[Path, dict], list]     # (tmp, tiny files) -> command line
    exit_code: int
    message: str                            # regex searched in the error line
    file_size_limit: int | None = None      # run in a child process with RLIMIT_FSIZE (a full disk)


CASES = [
    # Model files
    Case("truncated ONNX", lambda t, f: ["optimize", _write(t / "m.onnx", f["tiny.onnx"].read_bytes()[:600])],
         2, r"m\.onnx is not a valid ONNX model"),
    Case("corrupt ONNX", lambda t, f: ["optimize", _write(t / "m.onnx", _corrupt(f["tiny.onnx"].read_bytes()))],
         2, r"m\.onnx is not a valid ONNX model"),
    Case("empty ONNX file", lambda t, f: ["optimize", _write(t / "m.onnx", b"")], 2, r"m\.onnx is empty"),
    Case("ONNX external data at ../", lambda t, f: ["optimize", _external_data(t, f, "dotdot")],
         2, r"'fc1\.weight' keeps its data in '\.\./secret\.bin', outside the model's folder"),
    Case("ONNX external data at an absolute path", lambda t, f: ["optimize", _external_data(t, f, "absolute")],
         2, r"keeps its data in '/.*secret\.bin', outside the model's folder"),
    Case("ONNX external data through a link leaving the folder",
         lambda t, f: ["optimize", _external_data(t, f, "link")],
         2, r"keeps its data in 'weights\.bin', outside the model's folder"),
    Case("ONNX external data file missing", lambda t, f: ["optimize", _external_data(t, f, "missing")],
         2, r"keeps its data in 'weights\.bin', which does not exist"),
    Case("truncated .pt2", lambda t, f: ["optimize", _write(t / "m.pt2", f["tiny.pt2"].read_bytes()[:4000])],
         2, r"m\.pt2 is not a zip archive: the file is truncated or corrupt"),
    Case(".pt2 from another torch version", lambda t, f: ["optimize", _pt2_edited(t, f, _other_torch)],
         2, r"written by torch 9\.0\.0 \(export schema 99\.0\); this torch .* reads schema \d+\.x"),
    Case(".pt2 with a corrupt program", lambda t, f: ["optimize", _pt2_edited(
        t, f, lambda n, d: b"{not json" if n.endswith("models/model.json") else d)],
         2, r"cannot load ExportedProgram .*edited\.pt2"),
    Case(".pt2 refused with --safe", lambda t, f: ["optimize", f["tiny.pt2"], "--safe"],
         2, r"tiny\.pt2 is an ExportedProgram, a serialised program; --safe refuses it: give the architecture as "
            r"package\.module:factory and its state_dict with --weights"),
    Case("TorchScript refused with --safe",
         lambda t, f: ["optimize", f["tiny.ts"], "--input-shape", "1x1x4x4", "--safe"],
         2, r"tiny\.ts is a TorchScript program, which can run code when loaded; --safe refuses it"),
    Case("truncated TorchScript", lambda t, f: ["optimize", _write(t / "m.ts", f["tiny.ts"].read_bytes()[:3000])],
         2, r"m\.ts is not a zip archive: the file is truncated or corrupt"),
    Case("pickle carrying code as MODEL",
         lambda t, f: ["optimize", _write(t / "m.pt", pickle.dumps(Payload(t / MARKER)))],
         2, r"m\.pt is a pickle.*edgeml does not unpickle"),
    Case("torch.save checkpoint carrying code as MODEL",
         lambda t, f: ["optimize", _torch_saved(Payload(t / MARKER), t / "m.pt")],
         2, r"torch\.save checkpoint, which edgeml does not unpickle"),
    Case("torch.save checkpoint carrying code as --weights",
         lambda t, f: _factory("--weights", _torch_saved({"w": Payload(t / MARKER)}, t / "w.pt")),
         2, r"will not run code from a checkpoint"),
    Case("plain pickle carrying code as --weights",
         lambda t, f: _factory("--weights", _write(t / "w.pkl", pickle.dumps(Payload(t / MARKER)))),
         2, r"will not run code from a checkpoint"),
    Case("weights of another architecture",
         lambda t, f: _factory("--weights", _torch_saved(TinyNet().state_dict(), t / "w.pt")),
         2, r"do not fit the factory's model: missing"),
    # Input names, shapes and dtypes
    Case("--input-shape names no input", lambda t, f: _onnx(f, "--input-shape", "pixels:?x1x4x4"),
         2, r"names 'pixels', but the model's inputs are input"),
    Case("--input-shape of the wrong rank", lambda t, f: _onnx(f, "--input-shape", "input:1x16"),
         2, r"the model expects rank 4"),
    Case("--input-shape of the wrong dtype", lambda t, f: _onnx(f, "--input-shape", "input:?x1x4x4:int64"),
         2, r"the model takes float32, --input-shape says int64"),
    Case("--input-shape against a fixed size", lambda t, f: _onnx(f, "--input-shape", "input:1x1x5x4"),
         2, r"the model fixes dimension 2 to 4"),
    Case("--input-shape with an empty dimension", lambda t, f: _onnx(f, "--input-shape", "input:1x1x4x"),
         2, r"--input-shape 'input:1x1x4x': empty dimension"),
    Case("--input-shape with a non-numeric dtype", lambda t, f: _onnx(f, "--input-shape", "input:?x1x4x4:str"),
         2, r"--input-shape 'input:\?x1x4x4:str': 'str' is not a numeric dtype"),
    # Data
    Case("npz with the wrong array name", lambda t, f: _onnx(f, "--eval-data", _npz(t, pixels=_images(4))),
         2, r"data\.npz: arrays \['pixels'\] do not match the model's inputs \['input'\]"),
    Case("npz with the wrong shape", lambda t, f: _onnx(f, "--eval-data", _npz(t, input=_images(4)[:, :, :2])),
         2, r"'input' has shape 4x1x2x4, the model expects nx1x4x4"),
    Case("npz with a complex dtype",
         lambda t, f: _onnx(f, "--eval-data", _npz(t, input=_images(4).astype(np.complex64))),
         2, r"'input' is complex64, the model takes float32"),
    Case("npz holding a pickled object",
         lambda t, f: _onnx(f, "--eval-data", _npz(t, input=np.array([Payload(t / MARKER)], dtype=object))),
         2, r"cannot read .*data\.npz as \.npz \(Object arrays cannot be loaded"),
    Case("truncated npz", lambda t, f: _onnx(f, "--eval-data", _write(t / "d.npz", f["eval.npz"].read_bytes()[:300])),
         2, r"cannot read .*d\.npz as \.npz"),
    Case("NaN in calibration data", lambda t, f: _onnx(
        f, "--calib-data", _npz(t, input=_with(_images(8), (3, 0, 1, 2), np.nan))),
         2, r"data\.npz: 'input' holds 1 NaN or infinite value\(s\) \(first in sample 3\)"),
    Case("Inf in evaluation data", lambda t, f: _onnx(
        f, "--eval-data", _npz(t, input=_with(_images(8), (5,), np.inf))),
         2, r"data\.npz: 'input' holds 16 NaN or infinite value\(s\) \(first in sample 5\)"),
    Case("empty dataset", lambda t, f: _onnx(f, "--eval-data", _npz(t, input=_images(0))),
         2, r"data\.npz: the data has no samples"),
    Case("one-sample dataset to split", lambda t, f: _onnx(f, "--data", _npz(t, input=_images(1))),
         2, r"1 sample\(s\) cannot be split into calibration and evaluation"),
    Case("one-sample training data", lambda t, f: _factory(
        "--distill", "--train-data", _npz(t, input=np.zeros((1, 1, 8, 8), np.float32))),
         2, r"distillation: .*data\.npz has 1 sample\(s\); at least 2 are needed"),
    Case("labels out of range", lambda t, f: _onnx(
        f, "--eval-data", _npz(t, input=_images(4), labels=np.array([0, 1, 2, 7]))),
         2, r"data\.npz: labels range 0\.\.7, but the model scores 3 classes \(0\.\.2\)"),
    Case("negative labels", lambda t, f: _onnx(
        f, "--eval-data", _npz(t, input=_images(4), labels=np.array([0, -1, 2, 1]))),
         2, r"data\.npz: labels range -1\.\.2, but the model scores 3 classes"),
    Case("training labels out of range", lambda t, f: _factory(
        "--distill", "--train-data", _npz(t, input=np.zeros((4, 1, 8, 8), np.float32), labels=np.array([0, 1, 2, 10]))),
         2, r"distillation: .*data\.npz \(training split, rest\) labels must be 3 class indices from 0 to 9"),
    Case("float labels", lambda t, f: _onnx(
        f, "--eval-data", _npz(t, input=_images(4), labels=np.array([0.0, 1.0, 2.0, 0.5]))),
         2, r"'labels' must be 4 integer class indices, got float64"),
    Case("labels of another length", lambda t, f: _onnx(
        f, "--eval-data", _npz(t, input=_images(4), labels=np.array([0, 1, 2]))),
         2, r"'labels' must be 4 integer class indices, got int64 with shape 3"),
    Case("image folder with a broken image", lambda t, f: _onnx(f, "--eval-data", _broken_image_folder(t)),
         2, r"cannot read image .*images/b/1\.png"),
    Case("image folder without class folders", lambda t, f: _onnx(f, "--eval-data", _folder(t / "flat")),
         2, r"flat: an image folder needs one sub-folder per class, found none"),
    Case("data neither .npz nor a folder", lambda t, f: _onnx(f, "--eval-data", _write(t / "d.csv", b"1,2\n")),
         2, r"d\.csv: data must be an \.npz file or an image folder"),
    # Targets, profiles and recipes
    Case("unknown target", lambda t, f: _onnx(f, "--target", "tpu"), 2, r"unknown target 'tpu'"),
    Case("unknown profile", lambda t, f: _onnx(f, "--target", "jetson", "--profile", "jetson-nano-2"),
         2, r"unknown device profile 'jetson-nano-2'"),
    Case("profile YAML with wrong types", lambda t, f: _onnx(f, "--profile", _profile(t, PROFILE_WRONG_TYPES)),
         2, r"device\.yaml: memory_gb: 'plenty' is not of type 'number'"),
    Case("profile YAML carrying code", lambda t, f: _onnx(
        f, "--profile", _profile(t, f"!!python/object/apply:os.system ['touch {t / MARKER}']\n")),
         2, r"device\.yaml: cannot read it as YAML: could not determine a constructor"),
    Case("recipe with unknown keys", lambda t, f: _onnx(f, "--recipe", _recipe(t, "target: cpu\npruning: 0.5\n")),
         2, r"recipe .*recipe\.yaml: unknown setting\(s\) pruning; known: "),
    Case("recipe with wrong types", lambda t, f: _onnx(f, "--recipe", _recipe(t, "threads: two\n")),
         2, r"recipe\.yaml: threads \(--threads\) must be int, got 'two'"),
    Case("recipe with a non-finite number", lambda t, f: _onnx(f, "--recipe", _recipe(t, "measure_seconds: .nan\n")),
         2, r"recipe\.yaml: measure_seconds \(--measure-seconds\) must be a finite number, got nan"),
    Case("recipe carrying code", lambda t, f: _onnx(
        f, "--recipe", _recipe(t, f"!!python/object/apply:os.system ['touch {t / MARKER}']\n")),
         2, r"recipe .*recipe\.yaml is not valid YAML \(could not determine a constructor"),
    Case("recipe that is a list", lambda t, f: _onnx(f, "--recipe", _recipe(t, "- target: cpu\n")),
         2, r"recipe .*recipe\.yaml must be a mapping of settings, not list"),
    # OUT
    Case("OUT under a regular file", lambda t, f: _onnx(f, "-o", _write(t / "file", b"") / "out"),
         2, r"cannot write the output folder .*file/out: Not a directory"),
    Case("OUT exists, no --force", _existing_out, 2, r"runs/out already exists; .* pass --force"),
    Case("OUT on a full disk", lambda t, f: _onnx(f, "--calib-data", f["calib.npz"], "--eval-data", f["eval.npz"]),
         2, r"cannot write .*: File too large \(the disk is full, or a file size limit is set\)",
         file_size_limit=8192),
    # Conflicting flags
    Case("--data with --calib-data", lambda t, f: _onnx(f, "--data", f["eval.npz"], "--calib-data", f["calib.npz"]),
         2, r"use either --data .* or --calib-data/--eval-data"),
    Case("MODEL with --example", lambda t, f: _onnx(f, "--example", "digits"),
         2, r"give a MODEL or --example digits \(one of them\)"),
    Case("--split without --data", lambda t, f: _onnx(f, "--split", "0.5"), 2, r"--split .* give --data too"),
    Case("--weights with an ONNX model", lambda t, f: _onnx(f, "--weights", f["digits_weights.pt"]),
         2, r"--weights is only used with a package\.module:factory model"),
    Case("--preprocess with .npz data", lambda t, f: _onnx(f, "--eval-data", f["eval.npz"], "--preprocess", "size=4x4"),
         2, r"--preprocess applies to image folders"),
    Case("--prune-importance without --prune", lambda t, f: _onnx(f, "--prune-importance", "l2"),
         2, r"refine --prune RATIO; give it too"),
    Case("--seed -1", lambda t, f: _onnx(f, "--seed", "-1"), 2, r"seed \(--seed\) must be a whole number from 0"),
    Case("--threads 0", lambda t, f: _onnx(f, "--threads", "0"), 2, r"threads \(--threads\) must be at least 1"),
    # Archives
    Case("archive member with ..", lambda t, f: ["verify", _archive(t, tarfile.TarInfo(f"bundle/../../{ESCAPED}"))],
         2, r"refusing member 'bundle/\.\./\.\./edgeml-escaped': a '\.\.' in its path leaves the folder"),
    Case("archive member with an absolute path",
         lambda t, f: ["verify", _archive(t, tarfile.TarInfo(str(t / ESCAPED)))],
         2, r"refusing member '/.*/edgeml-escaped': absolute path"),
    Case("archive link leaving the folder",
         lambda t, f: ["verify", _archive(t, link("bundle/up", f"../../{ESCAPED}"))],
         2, r"refusing member 'bundle/up': a link \(to '\.\./\.\./edgeml-escaped'\)"),
    Case("archive hard link", lambda t, f: ["verify", _archive(t, link("bundle/h", "/etc/passwd", tarfile.LNKTYPE))],
         2, r"refusing member 'bundle/h': a link \(to '/etc/passwd'\)"),
    Case("truncated archive", lambda t, f: ["verify", _write(t / "x.tar.gz", _archive(t, tarfile.TarInfo(
        "bundle/a")).read_bytes()[:60])], 2, r"cannot read .*x\.tar\.gz as a \.tar\.gz"),
]


def _snapshot(folder: Path) -> dict | None:
    if not folder.exists():
        return None
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def _run(args: list[str], tmp: Path, file_size_limit: int | None) -> tuple[int, str, str]:
    if file_size_limit is None:
        from edgeml.cli import cli

        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    proc = subprocess.run([sys.executable, "-m", "edgeml", *args], cwd=tmp, capture_output=True, text=True,
                          preexec_fn=limit, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input(case: Case, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "out"
    command, *rest = [str(a) for a in case.build(tmp_path, tiny)]
    args = [command, *QUICK.get(command, []), *(["-o", str(out)] if command in WRITES_OUT else []), *rest]
    before = _snapshot(tmp_path / "runs")

    code, stdout, stderr = _run(args, tmp_path, case.file_size_limit)

    errors = [line for line in stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    got = errors[-1] if errors else (stderr.strip().splitlines() or ["(no error line)"])[-1]
    shown = got.replace(str(tmp_path), "TMP").replace(str(tiny["tiny.onnx"].parent), "TINY")
    RESULTS.append((case.name, f"{case.exit_code}, /{case.message}/", f"{code}, {shown}"))
    assert code == case.exit_code, stderr
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    prefix = "error: " if case.exit_code == 2 else "internal error: "
    assert errors[0].startswith(prefix) and re.search(case.message, errors[0]), errors[0]
    if case.exit_code == 1:
        assert "please report it" in errors[0]
    assert "Traceback" not in stdout + stderr
    assert _snapshot(tmp_path / "runs") == before
    assert not [p for p in tmp_path.rglob(".*") if ".partial-" in p.name]
    assert not list(tmp_path.rglob(MARKER))
    assert not (tmp_path / ESCAPED).exists() and not Path(tempfile.gettempdir(), ESCAPED).exists()


def test_torch_programs_load_after_a_warning(tiny, tmp_path):
    """Without --safe, TorchScript and .pt2 files load, after one warning line each."""
    from edgeml.cli import cli

    for model, extra in ((tiny["tiny.pt2"], []), (tiny["tiny.ts"], ["--input-shape", "input:?x1x4x4"])):
        result = CliRunner().invoke(cli, ["optimize", str(model), *extra, "--eval-data", str(tmp_path / "no.npz"),
                                          "-o", str(tmp_path / "out")])
        lines = result.stderr.splitlines()
        assert [line for line in lines if line.startswith("warning:")] == lines[:1], result.stderr
        assert "load it only from a source you trust" in lines[0] and "--safe" in lines[0]
        assert result.exit_code == 2 and lines[-1] == f"error: data not found: {tmp_path / 'no.npz'}"
        assert list(tmp_path.iterdir()) == []


def test_the_python_api_refuses_programs_when_safe(tiny, tmp_path):
    import edgeml
    from edgeml.errors import ModelError

    with pytest.raises(ModelError, match="--safe refuses it"):
        edgeml.optimize(str(tiny["tiny.pt2"]), safe=True, out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_zz_results_table():
    """The outcome of every case run above, as a table (`pytest -s` shows it)."""
    rows = [("input", "expected", "got"), *RESULTS]
    print("\n" + "\n".join(f"| {' | '.join(c.replace('|', '/') for c in row)} |" for row in
                           [rows[0], ("---", "---", "---"), *rows[1:]]))
