"""Reference vectors: a few real inputs with the outputs a bundle's artifact gave at build time.

`reference.npz` holds `input/<name>` and `output/<name>` arrays and the scalar `tolerance`. A run
passes when, for every output, max |output - reference| / max |reference| <= tolerance.

The tolerance depends on the precision the artifact computes in, because the same artifact on
another CPU, GPU or runtime build may pick other kernels, fusions and summation orders:

    fp32           1e-4   float rounding only (observed differences are around 1e-6)
    fp16           0.02   10-bit mantissa: each op rounds at about 5e-4, and errors add up
    bf16           0.05   8-bit mantissa; a CPU without BF16 instructions may run it in FP32
    int8 / int4    0.05   another kernel may round an activation to the next INT8 step
    int8 on a DLA  0.1    TensorRT also chooses there which layers run in INT8

Mixed precisions (`int8+fp32`) take the tolerance of their lowest precision.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

# One comparison for edgeml and for the bundle's run.py (which travels without edgeml).
from edgeml.bundle.standalone import relative_error

REFERENCE = "reference.npz"
SAMPLES = 8
TOLERANCE = {"fp32": 1e-4, "fp16": 0.02, "bf16": 0.05, "int8": 0.05, "int4": 0.05}
DLA_TOLERANCE = 0.1
COMPARISON = "max |output - reference| / max |reference|, per output over all samples; passes when <= tolerance"


def tolerance(precision: str, runtime_config: dict) -> float:
    if runtime_config.get("dla_core") is not None:
        return DLA_TOLERANCE
    return max(TOLERANCE[part] for part in precision.split("+"))


def write_reference(path: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                    tolerance: float) -> None:
    """An .npz (read with np.load) written byte for byte the same for the same arrays: np.savez stamps each
    member with the current time, so the members are written here with a fixed one."""
    arrays = {"tolerance": np.float64(tolerance), **{f"input/{k}": v for k, v in inputs.items()},
              **{f"output/{k}": v for k, v in outputs.items()}}
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def read_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """(inputs, outputs, tolerance) of a reference.npz, inputs and outputs by tensor name."""
    with np.load(path) as data:
        part = {kind: {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(kind + "/")}
                for kind in ("input", "output")}
        return part["input"], part["output"], float(data["tolerance"])


def max_relative_error(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """The largest `relative_error` over all reference outputs."""
    return max(relative_error(outputs[name], ref) for name, ref in reference.items())
