"""Peak memory of loading and running one model, measured in a fresh process.

Measured inside the edgeml process, the number would depend on what earlier rows left
allocated. A child process imports the runtime, notes its resident set, loads the model, runs
it, and reports how far its peak resident set (VmHWM, reset first) rose: the memory this model needs on top
of the runtime itself. Linux only (it reads /proc); elsewhere the result is None.

    python -m edgeml.measure.memory SPEC.json SAMPLE.npz
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RUNS = 10  # inferences after loading; the peak is normally reached on the first
_STATUS = Path("/proc/self/status")


def measure(spec: dict, sample: dict[str, np.ndarray], timeout: float = 600) -> int | None:
    """Peak RSS increase in bytes for `spec` (see `_open`), or None if it cannot be measured."""
    if not _STATUS.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, sample_path = Path(tmp) / "spec.json", Path(tmp) / "sample.npz"
        spec_path.write_text(json.dumps(spec))
        np.savez(sample_path, **sample)
        proc = subprocess.run([sys.executable, "-m", "edgeml.measure.memory", str(spec_path), str(sample_path)],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return None
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"])


def _open(spec: dict):
    """Import the runtime, then return a function that loads the model and gives a runner.

    spec: {"artifact": {backend, folder, entry, runtime_config, precision}, "threads": N}
       or {"source": {model, weights, input_shapes}, "threads": N} for a PyTorch original
       or {"generation": {runtime, folder, new_tokens}, "threads": N} for a language model (its runner generates
       from the sample's "ids").
    """
    threads = spec["threads"]
    if "generation" in spec:
        from edgeml.runtimes.generation import GENERATION_RUNTIMES

        g = spec["generation"]
        runtime = GENERATION_RUNTIMES[g["runtime"]]
        for module in runtime.modules:
            __import__(module)
        return lambda: _Generating(runtime.open(Path(g["folder"]), threads), g["new_tokens"])
    if "artifact" in spec:
        from edgeml.runtimes import BACKENDS
        from edgeml.runtimes.base import Artifact

        a = spec["artifact"]
        backend = BACKENDS[a["backend"]]
        for module in backend.modules:
            __import__(module)
        artifact = Artifact(a["backend"], a["precision"], Path(a["folder"]), a["entry"], a["runtime_config"])
        return lambda: backend.open(artifact, threads)

    import torch  # noqa: F401  (the runtime, imported before the baseline)

    from edgeml.inputs.models import load_model
    from edgeml.runtimes.pytorch import open_source

    s = spec["source"]

    def load():
        return open_source(load_model(s["model"], s["weights"], s["input_shapes"]), threads)
    return load


class _Generating:
    """A language model as a runner: each run generates `new_tokens` greedily after the sample's token ids."""

    def __init__(self, generator, new_tokens: int):
        self.generator, self.new_tokens = generator, new_tokens

    def run(self, sample: dict[str, np.ndarray]) -> list[int]:
        return list(self.generator.stream(sample["ids"].tolist(), self.new_tokens))


def _child(spec_path: str, sample_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    load = _open(spec)
    with np.load(sample_path) as z:
        sample = {k: z[k] for k in z.files}
    baseline = reset_peak_memory()
    runner = load()
    for _ in range(spec.get("runs", RUNS)):
        runner.run(sample)
    print(json.dumps({"peak_bytes": peak_memory() - baseline}))


def reset_peak_memory() -> int | None:
    """Reset the process's peak RSS; return the current RSS in bytes (None if unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_bytes("VmRSS")
    except OSError:
        return None


def peak_memory() -> int | None:
    try:
        return _status_bytes("VmHWM")
    except OSError:
        return None


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in {_STATUS}")


if __name__ == "__main__":
    _child(*sys.argv[1:3])
