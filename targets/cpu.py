"""The CPU target: ONNX Runtime and OpenVINO, each in FP32 and calibrated INT8."""

from __future__ import annotations

from pathlib import Path

from edgeml.compress.quantize import SUPPORTS as INT8
from edgeml.compress.quantize import onnxruntime_backend as ort_int8
from edgeml.compress.quantize import openvino_backend as ov_int8
from edgeml.targets.base import Artifact, BuildContext, Candidate, Target
from edgeml.targets.onnxruntime_backend import ONNXRUNTIME, copy_model
from edgeml.targets.openvino_backend import OPENVINO, read_onnx, save_ir


def _ort_fp32(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    copy_model(model, out / "model.onnx")
    return Artifact("onnxruntime", "fp32", out, "model.onnx")


def _ort_int8(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    ort_int8.run(model, out / "model.onnx", ctx.calibration, ctx.int8)
    return Artifact("onnxruntime", "int8", out, "model.onnx")


def _ov_fp32(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    return save_ir(read_onnx(model), out, "fp32")


def _ov_int8(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    quantized = ov_int8.run(read_onnx(model), ctx.calibration, ctx.int8)
    return save_ir(quantized, out, "int8")


CPU = Target(
    name="cpu",
    description="x86-64 / arm64 CPUs, measured on this machine",
    candidates=(
        Candidate("onnxruntime-fp32", ONNXRUNTIME, "fp32", _ort_fp32,
                  method="the exported ONNX model as it is"),
        Candidate("onnxruntime-int8", ONNXRUNTIME, "int8", _ort_int8, needs=INT8["backends"]["onnxruntime"],
                  method="onnxruntime.quantization static QDQ, per-channel weights, calibrated",
                  quantizer="ort", tunable=True),
        Candidate("openvino-fp32", OPENVINO, "fp32", _ov_fp32,
                  method="OpenVINO IR, run with the f32 precision hint"),
        Candidate("openvino-int8", OPENVINO, "int8", _ov_int8, needs=INT8["backends"]["openvino"],
                  method="NNCF post-training quantization of the OpenVINO IR", quantizer="openvino"),
    ),
)
