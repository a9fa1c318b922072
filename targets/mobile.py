"""The mobile target: LiteRT (.tflite) models for Android/iOS CPUs, converted from the PyTorch model with
litert-torch and measured here with the same interpreter and XNNPACK delegate that phones run. Causal language models
become ExecuTorch programs (edgeml.targets.llm_executorch), run here by ExecuTorch's runtime with XNNPACK, and LiteRT
models with a KV cache (edgeml.targets.llm_litert), run by ai-edge-litert.

Every candidate converts `ctx.source` itself, not the exported ONNX model: litert-torch reads PyTorch. The
lower precisions are ai-edge-quantizer passes over the FP32 .tflite (edgeml.compress.quantize.litert_backend).
"""

from __future__ import annotations

from pathlib import Path

from edgeml.compress.quantize import litert_backend as litert_quant
from edgeml.errors import EdgemlError
from edgeml.runtimes.base import Artifact
from edgeml.runtimes.litert import LITERT, convert
from edgeml.targets.base import BuildContext, Candidate, Target
from edgeml.targets.llm_executorch import EXECUTORCH_LANGUAGE_MODELS
from edgeml.targets.llm_litert import LITERT_LANGUAGE_MODELS


def _module_and_example(ctx: BuildContext):
    """The PyTorch module to convert and two real samples, in the model's input order."""
    if ctx.source is None:
        raise EdgemlError("the mobile target converts PyTorch models with litert-torch; MODEL is ONNX: give the "
                          "PyTorch model (package.module:factory with --weights, or a .pt2 file)")
    from edgeml.compress import torch_passes

    module = torch_passes.torch_module(ctx.source, "the mobile target")
    return module, torch_passes.example_inputs(ctx.source, ctx.calibration)


def _write(model: bytes, out: Path, precision: str, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.tflite").write_bytes(model)
    return Artifact("litert", precision, out, "model.tflite",
                    runtime_config={"inputs": [s.name for s in ctx.source.inputs]})


def _fp32(onnx_model: Path, out: Path, ctx: BuildContext) -> Artifact:
    return _write(convert(*_module_and_example(ctx)), out, "fp32", ctx)


def _fp16(onnx_model: Path, out: Path, ctx: BuildContext) -> Artifact:
    return _write(litert_quant.float16_weights(convert(*_module_and_example(ctx))), out, "fp16", ctx)


def _int8(onnx_model: Path, out: Path, ctx: BuildContext) -> Artifact:
    fp32 = convert(*_module_and_example(ctx))
    names = [s.name for s in ctx.source.inputs]
    return _write(litert_quant.run(fp32, ctx.calibration, names, ctx.int8), out, "int8", ctx)


_LITERT = litert_quant.SUPPORTS

MOBILE = Target(
    name="mobile",
    description="Android / iOS CPUs: LiteRT (TFLite) with XNNPACK, measured on this machine's CPU",
    candidates=(
        Candidate("litert-fp32", LITERT, "fp32", _fp32, needs=("litert_torch",), needs_source=True,
                  method="litert-torch conversion of the PyTorch model, batch 1"),
        Candidate("litert-fp16", LITERT, "fp16", _fp16, needs=_LITERT.modules, needs_source=True,
                  computes_in="fp32",
                  method="FP16 weights (ai-edge-quantizer float casting): half the size; XNNPACK unpacks them to "
                         "FP32 when it loads the model, so every op computes in FP32"),
        Candidate("litert-int8", LITERT, "int8", _int8, needs=_LITERT.modules, needs_source=True,
                  quantizer=_LITERT.name,
                  method="full-integer INT8 (ai-edge-quantizer static): weights per channel, activations and "
                         "model inputs/outputs per tensor, min/max ranges calibrated on the FP32 .tflite"),
    ),
    language_models=EXECUTORCH_LANGUAGE_MODELS + LITERT_LANGUAGE_MODELS,
)
