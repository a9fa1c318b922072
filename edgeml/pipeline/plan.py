"""What a device profile does to the plan: which candidates it can run, whether the model fits,
and the latency it is predicted to reach there.

A profile changes the plan, never the numbers measured here: a candidate the device has no path
for is skipped with the reason, a model larger than the device's memory is an error, and
predictions are kept apart from measurements (`Row.predicted`, never `Row.latency`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgeml.errors import EdgemlError, TargetError
from edgeml.profiles import Profile, ProfileError, default_profile, load_profile
from edgeml.targets.base import Candidate, Target

# Precisions a device must have a compute path for; weight-only formats compute in float.
COMPUTE_PRECISIONS = ("fp16", "bf16", "int8")


def resolve_profile(target: Target, spec: str | None) -> Profile | None:
    """The profile named by `spec` (or the target's default); None: the target is this machine."""
    spec = spec or default_profile(target.name)
    if spec is None:
        return None
    profile = load_profile(spec)
    if profile.target != target.name:
        raise TargetError(f"profile '{profile.name}' describes a {profile.target} device, not target "
                          f"'{target.name}': use --target {profile.target}, or a {target.name} profile "
                          "(`edgeml profiles list`)")
    return profile


def check_fits(profile: Profile | None, onnx_path: Path) -> None:
    """A model whose FP32 weights alone exceed the device's memory cannot be deployed there."""
    if profile is None:
        return
    weights = _weight_bytes(onnx_path)
    if weights > profile.memory_gb * 1e9:
        raise EdgemlError(f"the model's weights take {weights / 1e6:,.1f} MB in FP32, more than the "
                          f"{profile.memory_gb:g} GB of memory of {profile.display_name}: prune it, or pick a "
                          "larger device")


def unsuited(candidate: Candidate, profile: Profile | None, has_source: bool) -> str | None:
    """Why `candidate` is not built: the profile's device cannot run it, or it needs the PyTorch model."""
    if candidate.needs_source and not has_source:
        return "builds from the PyTorch model; MODEL is ONNX"
    if profile is None:
        return None
    if candidate.needs_dla and profile.dla_cores == 0:
        return f"{profile.display_name} has no DLA cores; its INT8 runs on the GPU instead (tensorrt-int8)"
    precision = (candidate.computes_in or candidate.precision).split("+")[0]
    if precision in COMPUTE_PRECISIONS and not profile.supports(precision):
        return (f"{profile.display_name} has no {precision.upper()} compute path "
                f"(it computes in {', '.join(profile.precisions)})")
    return None


def predict(onnx_path: Path, profile: Profile | None, precision: str, threads: int | None,
            dla: bool = False) -> dict | None:
    """The roofline latency of the model on the profile's device at `precision` (labelled predicted).

    `threads` counts for CPU devices only. A DLA candidate is predicted against one DLA core's
    INT8 peak (the profile's gpu.dla total over its cores); without that number it has none.
    """
    if profile is None:
        return None
    from edgeml.measure import roofline

    if profile.gpu is not None:
        threads = None
    try:
        prediction = roofline.predict(onnx_path, _dla_core(profile) if dla else profile, precision, threads=threads)
    except EdgemlError as e:
        return {"label": "predicted", "profile": profile.name, "precision": precision, "ms": None, "reason": str(e)}
    d = prediction.to_dict()
    d.pop("layers", None)
    return {"label": "predicted", **d, **({"unit": "one DLA core"} if dla else {})}


def _dla_core(profile: Profile) -> Profile:
    tops = (profile.gpu or {}).get("dla", {}).get("int8_dense_tops")
    if not tops or not profile.dla_cores:
        raise ProfileError(f"profile {profile.name} gives no DLA INT8 throughput (gpu.dla.int8_dense_tops)")
    return replace(profile, precisions=("int8",), peak_gops={"int8": tops * 1000 / profile.dla_cores})


def _weight_bytes(onnx_path: Path) -> int:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    total = 0
    for tensor in model.graph.initializer:
        count = 1
        for d in tensor.dims:
            count *= d
        total += count * 4
    return total
