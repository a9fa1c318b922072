"""Shared fixtures: the digits CNN trained once per session, saved in every MODEL format; one optimize run of
the digits example shared by the tests that only read it (demo_run); the CLI run in-process; a CPU with given
features (assume_cpu); a tiny language model, text to judge it on and one optimize run of it (lm_run).

The longest of them are made once for the whole run (made_once), not once per pytest-xdist worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """Keep the example's trained weights and the runs' cached exports and builds out of the user's cache:
    one cache for the session, shared by every test that does not name its own."""
    os.environ["EDGEML_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def digits(_cache):
    from edgeml.examples import digits_example

    return digits_example()


@pytest.fixture(scope="session")
def files(digits, tmp_path_factory) -> dict[str, Path]:
    """The trained digits CNN as ONNX, .pt2, TorchScript and state_dict, plus .npz data."""
    import torch

    d = tmp_path_factory.mktemp("digits")
    model = digits.model
    x = torch.from_numpy(digits.test.inputs["input"][:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(d / "digits.onnx"), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
        program = torch.export.export(model, (x,), dynamic_shapes={"input": {0: torch.export.Dim("batch")}})
        torch.export.save(program, str(d / "digits.pt2"))
        torch.jit.trace(model, x).save(str(d / "digits.ts"))
    torch.save(model.state_dict(), d / "weights.pt")
    np.savez(d / "calib.npz", input=digits.validation.inputs["input"], labels=digits.validation.labels)
    np.savez(d / "eval.npz", input=digits.test.inputs["input"], labels=digits.test.labels)
    return {p.name: p for p in d.iterdir()}


DEMO = ("--example", "digits", "--target", "cpu", "--threads", "1", "--measure-seconds", "0.05")


def made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder `name` after make(folder) ran in it, once for the whole run: pytest-xdist's workers share it (the
    first to ask makes it while the others wait for its lock; one that failed leaves it to be made again)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent                  # the run's folder, above each worker's own
    folder = root / name
    with FileLock(f"{folder}.lock"):
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def demo_run(digits, tmp_path_factory):
    """`edgeml optimize` (in this process) of the digits example with DEMO's settings and a cache of its own, empty
    before: (cache folder, OUT, the run's stderr, DEMO). Its OUT is shared by the tests that only read it (the cache
    tests' first run, the report tests): read it, or copy it before writing into it."""
    from edgeml.cli import cli

    def run(folder: Path) -> None:
        result = CliRunner().invoke(cli, ["optimize", *DEMO, "--cache-dir", str(folder / "cache"),
                                          "-o", str(folder / "out")], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        (folder / "stderr.txt").write_text(result.stderr)

    folder = made_once(tmp_path_factory, "demo-run", run)
    return folder / "cache", folder / "out", (folder / "stderr.txt").read_text(), DEMO


@pytest.fixture
def assume_cpu(monkeypatch):
    """Make edgeml assume a CPU with the given /proc/cpuinfo flags, for this test only (and the
    subprocesses it starts), through $EDGEML_CPU_FEATURES; edgeml.measure.cpu_features reads it on every call.

        def test_x(assume_cpu):
            assume_cpu("avx2", "fma")                                        # AVX2 only: no VNNI, no BF16
            assume_cpu("avx2", "avx512f", "avx512_vnni", "avx512_bf16")      # AVX-512 with VNNI and BF16
            assume_cpu()                                                     # none of the flags edgeml reads

    Tests of what depends on the CPU use it instead of reading this machine's features.
    """
    from edgeml.measure.cpu_features import ENV

    def assume(*flags: str) -> None:
        monkeypatch.setenv(ENV, ",".join(flags) or "none")
    return assume


@pytest.fixture
def edgeml_cli():
    """Run the CLI in-process: edgeml_cli(*args) -> click Result (exit_code, stdout, stderr)."""
    from edgeml.cli import cli

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return invoke


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """The tiny Llama-architecture causal LM of tests/tiny_lm.py, trained once per session, as a Hugging Face
    folder (read it, or copy it before writing into it)."""
    from tiny_lm import make_tiny_lm

    return made_once(tmp_path_factory, "tiny-lm", make_tiny_lm)


@pytest.fixture(scope="session")
def lm_texts(tmp_path_factory) -> tuple[Path, Path]:
    """Calibration and evaluation text as folders of .txt files (one document each), from the Python reference."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("text")
    names = sorted(n for n in topics if len(topics[n]) > 2000)
    for folder, half in (("eval", names[1::2][:8]), ("calib", names[0::2][:8])):
        (root / folder).mkdir()
        for name in half:
            (root / folder / f"{name}.txt").write_text(topics[name])
    return root / "calib", root / "eval"


@pytest.fixture(scope="session")
def lm_run(tiny_lm, lm_texts, tmp_path_factory):
    """One `edgeml optimize` of tiny_lm for the CPU, INT8 builds only, in its own process as a user runs it:
    (OUT, its report.json, its stderr). Shared by the tests that only read it: copy OUT before writing into it."""
    calib, evaluation = lm_texts

    def run(folder: Path) -> None:
        done = subprocess.run([sys.executable, "-m", "edgeml", "optimize", str(tiny_lm), "--target", "cpu",
                               "--precision", "int8", "--calib-data", str(calib), "--eval-data", str(evaluation),
                               "--threads", "2", "-o", str(folder / "out")], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        (folder / "stderr.txt").write_text(done.stderr)

    folder = made_once(tmp_path_factory, "lm-run", run)
    out = folder / "out"
    return out, json.loads((out / "report.json").read_text()), (folder / "stderr.txt").read_text()
