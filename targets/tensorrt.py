"""TensorRT candidates: what a Jetson or an NVIDIA GPU needs to build its engine, prepared here.

A TensorRT engine only runs on the GPU model and TensorRT version that built it, so a candidate's
build here makes the inputs of that build, in one folder:
- `model.onnx`: the ONNX model the engine is built from (FP16, QDQ INT8, or FP32 for the DLA);
- `build_engine.sh`: trtexec with the flags the device profile calls for;
- `calibration.cache` (DLA only): activation scales in TensorRT's calibration cache format.
The bundle adds `reference.npz` (edgeml.bundle.reference): evaluation inputs and the outputs ONNX Runtime
gave for them here, to check the engine on the device (`edgeml build-engine`).
Quality is measured here with ONNX Runtime on the same ONNX model (`Candidate.check_with`); for
the DLA, whose INT8 is implicit, on a QDQ model with the same activation ranges. Latency is only
predicted from the device profile.
"""

from __future__ import annotations

import shlex
import struct
import tempfile
from pathlib import Path

import numpy as np

from edgeml.compress.quantize import Int8Config, float16
from edgeml.compress.quantize.onnxruntime_backend import METHODS, calibration_reader, prepare
from edgeml.compress.quantize.onnxruntime_backend import SUPPORTS as _ORT
from edgeml.errors import TargetError
from edgeml.inputs.data import Dataset
from edgeml.inputs.models import onnx_input_specs
from edgeml.inputs.specs import TensorSpec
from edgeml.profiles import Profile
from edgeml.runtimes.base import Artifact
from edgeml.runtimes.onnxruntime import ONNXRUNTIME
from edgeml.runtimes.tensorrt import ENGINE, TENSORRT, TIMING_CACHE
from edgeml.targets.base import BuildContext, Candidate

CALIBRATION_CACHE = "calibration.cache"
DLA_CORE = 0


def _fp16(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    float16.run(model, out / "model.onnx")
    return _finish(Artifact(TENSORRT.name, "fp16", out, "model.onnx"), ctx, "tensorrt-fp16")


def _int8(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(model, prepared)
        quantize(prepared, out / "model.onnx", ctx.calibration, ctx.int8)
    return _finish(Artifact(TENSORRT.name, "int8", out, "model.onnx"), ctx, "tensorrt-int8")


def _int8_dla(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    """The FP32 model and a calibration cache: TensorRT's DLA path takes INT8 scales from a cache, not Q/DQ layers."""
    profile = ctx.profile
    reason = dla_unsuited(profile)
    if reason:
        raise TargetError(reason)
    out.mkdir(parents=True, exist_ok=True)
    prepare(model, out / "model.onnx")        # the tensor names the cache holds are this model's
    ranges = quantize(out / "model.onnx", out / "model_qdq.onnx", ctx.calibration, ctx.int8, outputs=True)
    write_calibration_cache(ranges, out / CALIBRATION_CACHE, profile.runtimes["tensorrt"])
    artifact = Artifact(TENSORRT.name, "int8", out, "model.onnx", runtime_config={
        "dla_core": DLA_CORE, "calibration_cache": CALIBRATION_CACHE, "check_entry": "model_qdq.onnx"})
    return _finish(artifact, ctx, "tensorrt-int8-dla")


def dla_unsuited(profile: Profile | None) -> str | None:
    """Why the DLA candidate cannot be built for `profile`, or None."""
    if profile is None:
        return "the DLA candidate needs a device profile with DLA cores (e.g. --profile jetson-orin-nx)"
    if profile.dla_cores == 0:
        return f"{profile.display_name} has no DLA cores; its INT8 runs on the GPU instead (tensorrt-int8)"
    if "tensorrt" not in profile.runtimes:
        return f"profile {profile.name} gives no TensorRT version (runtimes.tensorrt) for the calibration cache"
    return None


def quantize(prepared: Path, output: Path, calibration: Dataset, config: Int8Config, outputs: bool = False):
    """QDQ INT8 as TensorRT takes it; returns the calibration ranges (onnxruntime's TensorsData).

    `prepared` is the pre-processed model (onnxruntime_backend.prepare). The same calibration as
    onnxruntime_backend.run, with TensorRT's rules: symmetric INT8 activations and per-channel
    symmetric INT8 weights, biases left in float (TensorRT dequantizes no INT32) and a Q/DQ pair
    for each consumer (TensorRT cannot share one between layers).

    Q/DQ go on the inputs of the ops quantized, not on their outputs, as TensorRT's Q/DQ placement
    guide recommends: TensorRT fuses the activation after a convolution and quantizes where the next
    INT8 layer reads, so a Q/DQ on each output only adds a rounding the engine would not need (on the
    logits too); an Add fused into the convolution that feeds it keeps that input in float.
    `outputs=True` quantizes every output as well, which calibrates every tensor: the DLA's implicit
    INT8 needs a range for each.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    placement = {} if outputs else {"OpTypesToExcludeOutputQuantization": _op_types(prepared)}
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        ranges = Path(tmp) / "ranges.json"
        quantize_static(
            str(prepared), str(output), calibration_reader(calibration, config),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, METHODS[config.calibration_method]),
            nodes_to_exclude=list(config.exclude),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibTensorRangeSymmetric": True,
                           "QuantizeBias": False, "DedicatedQDQPair": True, **placement},
            calibration_cache_path=ranges,
        )
        if not outputs:
            _float_residual_inputs(output)
        return load_tensors_data(ranges)


def _float_residual_inputs(path: Path) -> None:
    """Take the Q/DQ off one input of each Add that a convolution feeds: TensorRT fuses the Add into that
    convolution and adds in its epilogue, before any rounding to INT8, so only the other input is INT8."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    dropped = []
    for add in (n for n in graph.node if n.op_type == "Add"):
        for i, name in enumerate(add.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            source = producers.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            if source is not None and source.op_type == "Conv":
                add.input[i] = q.input[0]      # the Q/DQ pair is this Add's alone (DedicatedQDQPair)
                dropped += [dq, q]
                break
    if not dropped:
        return
    for node in dropped:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    onnx.save(model, str(path))


def _op_types(model: Path) -> list[str]:
    import onnx

    return sorted({node.op_type for node in onnx.load(str(model), load_external_data=False).graph.node})


def write_calibration_cache(ranges, path: Path, tensorrt_version: str) -> None:
    """TensorRT's calibration cache: a `TRT-<version>-EntropyCalibration2` line, then `name: <scale>`
    per tensor, the scale (amax / 127) as the hex digits of its big-endian IEEE float32."""
    lines = [f"TRT-{tensorrt_version_number(tensorrt_version)}-EntropyCalibration2"]
    for name, data in sorted(ranges.data.items()):
        low, high = data.range_value
        amax = float(max(np.abs(low).max(), np.abs(high).max()))
        scale = amax / 127 if amax > 0 else 1.0     # as onnxruntime does for a tensor that is always 0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    path.write_text("\n".join(lines) + "\n")


def tensorrt_version_number(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION: 10.3.0 -> 100300 (major x 10000 from TensorRT 10), 8.5.2 -> 8502."""
    try:
        major, minor, patch = (int(p) for p in (str(version).split(".") + ["0", "0"])[:3])
    except ValueError:
        raise TargetError(f"'{version}' is not a TensorRT version like 10.3.0 (runtimes.tensorrt)") from None
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def _finish(artifact: Artifact, ctx: BuildContext, candidate: str) -> Artifact:
    """Add the build settings to `artifact`, then build_engine.sh beside its model."""
    profile = ctx.profile
    artifact.runtime_config.update(
        shapes=_dynamic_shapes(artifact.folder / artifact.entry, ctx.calibration),
        workspace_mib=None if profile is None else int(profile.memory_gb * 1024 / 4),
        tensorrt=None if profile is None else profile.runtimes.get("tensorrt"),
    )
    script = artifact.folder / "build_engine.sh"
    script.write_text(build_script(artifact, profile, candidate))
    script.chmod(0o755)
    return artifact


def _dynamic_shapes(model: Path, calibration: Dataset) -> dict[str, list[int]]:
    """The batch-1 shape of each input with a dimension unknown until run time, from the data."""
    return {s.name: [1, *calibration.inputs[s.name].shape[1:]] for s in _inputs(model) if _dynamic(s)}


def _inputs(model: Path) -> list[TensorSpec]:
    import onnx

    return onnx_input_specs(onnx.load(str(model), load_external_data=False))


def _dynamic(spec: TensorSpec) -> bool:
    return not all(isinstance(d, int) and d > 0 for d in spec.shape)


def trtexec_args(artifact: Artifact) -> list[str]:
    """trtexec's arguments for `artifact`, from its precision and runtime_config."""
    config = artifact.runtime_config
    args = [f"--onnx={artifact.entry}", f"--saveEngine={ENGINE}", f"--{artifact.precision}"]
    if artifact.precision == "int8":
        args.append("--fp16")         # layers left out of INT8 run in FP16, not FP32 (on the DLA: must)
    if config.get("calibration_cache"):
        args.append(f"--calib={config['calibration_cache']}")
    if config.get("dla_core") is not None:
        args += [f"--useDLACore={config['dla_core']}", "--allowGPUFallback"]
    if config.get("shapes"):
        args.append("--shapes=" + ",".join(f"{name}:{'x'.join(map(str, shape))}"
                                           for name, shape in config["shapes"].items()))
    if config.get("workspace_mib"):
        args.append(f"--memPoolSize=workspace:{config['workspace_mib']}M")
    return [*args, f"--timingCacheFile={TIMING_CACHE}"]


def build_script(artifact: Artifact, profile: Profile | None, candidate: str) -> str:
    """A bash script that builds the engine with trtexec on the device, from the artifact's folder."""
    if profile is None:
        device = "none given: an engine for the GPU of the machine that runs this"
        version = "the one on that machine"
    else:
        device = f"{profile.name} ({profile.display_name})"
        version = str(profile.runtimes.get("tensorrt", "not given by the profile"))
    header = [
        f"Builds the TensorRT engine of edgeml candidate {candidate} into {ENGINE}.",
        f"Device profile: {device}",
        f"TensorRT expected: {version} (an engine runs only with the TensorRT version and GPU that built it)",
    ]
    if artifact.runtime_config.get("calibration_cache"):
        header.append(f"{CALIBRATION_CACHE} names that version on its first line; TensorRT reads only a cache "
                      "of its own version.")
    header += [
        "Run it on the device: bash build_engine.sh  (TRTEXEC=/path/to/trtexec picks another trtexec)",
        "Or, with TensorRT's Python package: edgeml build-engine BUNDLE, which also checks it against the bundle's "
        "reference vectors.",
    ]
    args = " \\\n  ".join(shlex.quote(a) for a in trtexec_args(artifact))
    return "\n".join([
        "#!/usr/bin/env bash",
        *(f"# {' '.join(line.split())}" for line in header),   # one line each, whatever the profile says
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'trtexec="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        f'"$trtexec" \\\n  {args}',
        "",
    ])


def _trtexec_names_fit(model: Path) -> str | None:
    """trtexec splits --shapes at commas and drops quotes from names: such a dynamic input cannot be named."""
    for spec in _inputs(model):
        if _dynamic(spec) and ("," in spec.name or "'" in spec.name):
            return f"input '{spec.name}' has a comma or a quote, which trtexec's --shapes cannot take: rename it"
    return None


TENSORRT_FP16 = Candidate(
    "tensorrt-fp16", TENSORRT, "fp16", _fp16, needs=_ORT.modules, check_with=ONNXRUNTIME,
    applies=_trtexec_names_fit,
    method="onnxruntime float16 converter (FP32 inputs/outputs); engine built on the device with trtexec --fp16")
TENSORRT_INT8 = Candidate(
    "tensorrt-int8", TENSORRT, "int8", _int8, needs=_ORT.modules, check_with=ONNXRUNTIME,
    applies=_trtexec_names_fit, quantizer=_ORT.name,
    method="explicit INT8: onnxruntime.quantization QDQ on the inputs of the ops quantized, per-channel symmetric "
           "INT8 weights, symmetric INT8 activations, calibrated; engine built on the device with trtexec --int8")
TENSORRT_INT8_DLA = Candidate(
    "tensorrt-int8-dla", TENSORRT, "int8", _int8_dla, needs=_ORT.modules, check_with=ONNXRUNTIME,
    applies=_trtexec_names_fit, quantizer=_ORT.name, needs_dla=True,
    method=f"implicit INT8 on DLA core {DLA_CORE} (GPU fallback): the FP32 ONNX and a TensorRT calibration cache "
           "from edgeml's calibration ranges; quality checked on a QDQ model with the same ranges")
