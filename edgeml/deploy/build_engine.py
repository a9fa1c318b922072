"""`edgeml build-engine BUNDLE`: build a Jetson or GPU bundle's TensorRT engine where it will run, and check it.

An engine only runs with the GPU and TensorRT version that built it, so such a bundle ships the ONNX
model and its build settings. This builds `model.engine` from them with TensorRT's Python API (the
engine the bundle's build_engine.sh builds with trtexec), runs the bundle's reference inputs through
it, compares the outputs with those ONNX Runtime gave when the bundle was made, and times it.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeml.bundle.folder import Bundle
from edgeml.bundle.reference import REFERENCE, max_relative_error, read_reference
from edgeml.errors import EdgemlError
from edgeml.measure.latency import measure_latency
from edgeml.runtimes.tensorrt import ENGINE, TENSORRT, EngineRunner, build_plan

NOT_INSTALLED = ("TensorRT is not installed here: run build_engine.sh on the device (it needs trtexec), or install "
                 "TensorRT's Python package on a GPU host")


def build_engine(bundle: Path, *, out: Path | None = None) -> dict:
    """Build the engine of `bundle` into `out` (default: BUNDLE/model.engine), check it, time it.

    Returns the engine's path, the largest error against reference.npz (relative to each output's
    largest value), the tolerance, whether it passed, the batch-1 latency (host-device copies
    included), the GPU and the TensorRT versions expected and found.
    """
    bundle = Bundle.open(bundle)
    if bundle.backend_name != TENSORRT.name:
        raise EdgemlError(f"{bundle.folder} holds a {bundle.backend_name} artifact; build-engine builds the TensorRT "
                          "engines of --target jetson and --target gpu bundles")
    if TENSORRT.missing():
        raise EdgemlError(NOT_INSTALLED)
    import torch

    artifact = bundle.artifact()
    plan = build_plan(artifact)
    engine = Path(out) if out else bundle.folder / ENGINE
    partial = engine.with_name(f".{engine.name}.partial-{os.getpid()}")
    partial.write_bytes(plan)
    os.replace(partial, engine)

    runner = EngineRunner(plan)
    inputs, expected, tolerance = read_reference(bundle.folder / REFERENCE)
    error = max_relative_error(dict(zip(runner.output_names, runner.run(inputs))), expected)
    one = {name: array[:1] for name, array in inputs.items()}
    latency = measure_latency(lambda: runner.run(one))
    return {
        "engine": str(engine),
        "max_error": error,
        "tolerance": tolerance,
        "passed": error <= tolerance,
        "latency_ms": latency.to_dict(),
        "device": torch.cuda.get_device_name(),
        "tensorrt": {"expected": artifact.runtime_config.get("tensorrt"), "installed": TENSORRT.version()},
    }
