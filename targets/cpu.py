"""The CPU target: ONNX Runtime and OpenVINO, in FP32 and the lower precisions each runs on a CPU, plus an
opt-in PyTorch INT8 program made by Intel Neural Compressor from the PyTorch model (--quantizer inc).

Some candidates suit only some models, which their `applies` rule reads from the ONNX graph: dynamic
INT8 and weight-only INT8/INT4 are for models whose compute is in MatMuls with weights (transformers,
RNNs), not for CNNs; the bf16 precision hint (the FP32 IR in bf16, and the INT8 IR with its float parts in
bf16) needs a CPU with BF16 instructions (edgeml.measure.cpu_features, which $EDGEML_CPU_FEATURES overrides).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgeml.compress.quantize import WeightOnlyConfig, fake_quantizers, float16, inc_backend, qdq_quantizers
from edgeml.compress.quantize import onnxruntime_backend as ort_quant
from edgeml.compress.quantize import openvino_backend as ov_quant
from edgeml.errors import EdgemlError
from edgeml.inputs.data import Dataset
from edgeml.measure import cpu_features
from edgeml.runtimes.base import Artifact
from edgeml.runtimes.onnxruntime import ONNXRUNTIME, copy_model
from edgeml.runtimes.openvino import OPENVINO, Converted, convert_onnx, read_onnx, save_ir
from edgeml.runtimes.pytorch import TORCH, write_program
from edgeml.targets.base import AccuracyControl, BuildContext, Candidate, Quantizers, Target
from edgeml.targets.llm_llamacpp import LLAMACPP_LANGUAGE_MODELS
from edgeml.targets.llm_onnxruntime_genai import ORT_GENAI_LANGUAGE_MODELS
from edgeml.targets.llm_openvino import OPENVINO_LANGUAGE_MODELS

INT8_WEIGHTS = WeightOnlyConfig(bits=8)
INT4_WEIGHTS = WeightOnlyConfig(bits=4)


@dataclass(frozen=True)
class GraphSummary:
    """What the candidates' rules read from an ONNX graph."""
    convs: int                              # Conv / ConvTranspose nodes
    weights: tuple[tuple[str, int], ...]    # (op type, K) of each MatMul / Gemm with a constant 2-D weight
    lstms: int
    attention: bool                         # a Softmax and a MatMul of two activations (attention scores)

    @property
    def matmul_heavy(self) -> bool:
        """More layers with weights are MatMul/Gemm/LSTM than Conv: a transformer or an RNN, not a CNN
        (a ViT's patch embedding is one Conv among dozens of MatMuls)."""
        return len(self.weights) + self.lstms > self.convs

    @property
    def transformer(self) -> bool:
        return self.attention and self.matmul_heavy

    def describe(self) -> str:
        return f"{self.convs} Conv against {len(self.weights) + self.lstms} MatMul/Gemm/LSTM layers with weights"


def _graphs(graph):
    """`graph` and the subgraphs of its If / Loop / Scan nodes, at any depth (a VAD's model sits in the branches of
    an If on its sample rate)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _graphs(sub)


def summarize(model: Path) -> GraphSummary:
    stat = model.stat()
    return _summarize(str(model), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _summarize(path: str, mtime_ns: int, size: int) -> GraphSummary:
    import onnx

    graphs = list(_graphs(onnx.load(path, load_external_data=False).graph))
    nodes = [node for graph in graphs for node in graph.node]
    shapes = {t.name: tuple(t.dims) for graph in graphs for t in graph.initializer}
    shapes.update({n.output[0]: tuple(a.t.dims) for n in nodes if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    weights, activation_matmul = [], False
    for node in nodes:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        shape = shapes.get(node.input[1])
        if shape is not None and len(shape) == 2:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            weights.append((node.op_type, shape[1] if trans_b else shape[0]))
        elif node.op_type == "MatMul" and shape is None and node.input[0] not in shapes:
            activation_matmul = True
    ops = [n.op_type for n in nodes]
    return GraphSummary(convs=ops.count("Conv") + ops.count("ConvTranspose"), weights=tuple(weights),
                        lstms=ops.count("LSTM"), attention=activation_matmul and "Softmax" in ops)


def _dynamic_fits(model: Path) -> str | None:
    graph = summarize(model)
    if graph.matmul_heavy:
        return None
    return (f"no MatMul/Gemm/LSTM carries most of the compute ({graph.describe()}): dynamic INT8 is for "
            "transformers and RNNs, and runs slower than FP32 on CNNs")


def _weight_only_fits(op_types: tuple[str, ...], min_k: int) -> Callable[[Path], str | None]:
    """Weight-only quantization compresses the constant weights of `op_types` with at least `min_k` inputs."""
    def fits(model: Path) -> str | None:
        graph = summarize(model)
        if not graph.matmul_heavy:
            return f"a CNN ({graph.describe()}): weight-only quantization is for transformer MatMuls"
        if not any(op in op_types and k >= min_k for op, k in graph.weights):
            return f"no {'/'.join(op_types)} with a constant weight of {min_k} or more input features"
        return None
    return fits


# Reads only the CPU (edgeml.measure.cpu_features, $EDGEML_CPU_FEATURES), so `edgeml targets` applies it too.
_bf16_fits = cpu_features.CpuRule(cpu_features.missing_bf16)


def _ort_fp32(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    copy_model(model, out / "model.onnx")
    return Artifact("onnxruntime", "fp32", out, "model.onnx")


def _ort_int8(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    built = ort_quant.static(model, out / "model.onnx", ctx.calibration, ctx.int8)
    return Artifact("onnxruntime", "int8", out, "model.onnx", notes=built.notes)


def _ort_int8_dynamic(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    built = ort_quant.dynamic(model, out / "model.onnx", ctx.int8, ctx.calibration)
    return Artifact("onnxruntime", "int8", out, "model.onnx", notes=built.notes)


def _ort_fp16(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    float16.run(model, out / "model.onnx")
    return Artifact("onnxruntime", "fp16", out, "model.onnx")


def _ort_int4_weights(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    ort_quant.run_weight_only(model, out / "model.onnx", INT4_WEIGHTS)
    return Artifact("onnxruntime", "int4", out, "model.onnx")


def _ov_model(model: Path, ctx: BuildContext) -> Converted:
    """The ONNX model converted for OpenVINO; a failed conversion is retried with static input shapes, those of
    one calibration sample (edgeml.runtimes.openvino.convert_onnx)."""
    return convert_onnx(model, {name: value.shape for name, value in ctx.calibration.feeds(0, 1).items()})


def _ov_ir(converted: Converted, model, out: Path, precision: str, hint: str = "f32") -> Artifact:
    """`model` (made from `converted`) saved as IR, with the conversion's notes."""
    return replace(save_ir(model, out, precision, hint), notes=converted.notes)


def _ov_fp32(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    converted = _ov_model(model, ctx)
    return _ov_ir(converted, converted.model, out, "fp32")


_LAST_INT8: dict = {}     # the last NNCF INT8 model, by what made it: openvino-int8-bf16 runs openvino-int8's IR


def _nncf_int8(model: Path, ctx: BuildContext):
    """(the conversion, the NNCF INT8 model with the quantizers `ctx.int8.reverted` bypassed); the search's trials
    that only revert quantizers reuse one NNCF run."""
    stat = model.stat()
    settings = replace(ctx.int8, reverted=())
    key = (str(model), stat.st_mtime_ns, stat.st_size, ctx.calibration.sha256, settings)
    if key not in _LAST_INT8:
        converted = _ov_model(model, ctx)
        quantized = ov_quant.run(converted.model, ctx.calibration, settings, transformer=summarize(model).transformer)
        _LAST_INT8.clear()
        _LAST_INT8[key] = converted, quantized
    converted, quantized = _LAST_INT8[key]
    if ctx.int8.reverted:
        return converted, fake_quantizers.reverted(quantized, ctx.int8.reverted, converted.model)
    return converted, quantized


@functools.lru_cache(maxsize=1)
def _ov_float(path: str, mtime_ns: int, size: int):
    """The float OpenVINO model NNCF quantizes (`_ov_model`, its ops named as `ov_quant.run` names them): the weights
    the search's OpenVINO weight quantizers revert to."""
    return ov_quant.stable_names(convert_onnx(Path(path)).model)


def _ov_quantizers() -> Quantizers:
    def float_model(onnx: Path):
        stat = onnx.stat()
        return _ov_float(str(onnx), stat.st_mtime_ns, stat.st_size)
    return Quantizers(lambda ir, onnx: fake_quantizers.listed(ir, float_model(onnx)),
                      lambda ir, onnx, names: fake_quantizers.switchable(ir, names, float_model(onnx)))


def _ov_int8(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    return _reverted_in_float(_ov_ir(*_nncf_int8(model, ctx), out, "int8"), ctx)


def _ov_int8_bf16(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    """`_ov_int8`'s IR run with the bf16 hint: the ops NNCF leaves in float run in bf16, as OpenVINO's
    default hint runs them on CPUs with BF16 instructions."""
    return _reverted_in_float(_ov_ir(*_nncf_int8(model, ctx), out, "int8", hint="bf16"), ctx)


def _reverted_in_float(artifact: Artifact, ctx: BuildContext) -> Artifact:
    """With quantizers reverted, `artifact` run without OpenVINO's dynamic quantization: the CPU plugin otherwise
    quantizes the float input of a MatMul with integer weights at run time, which undoes the revert (a heavy-tailed
    activation crushed again: 0.61 relative output error where the reverted model computes 0.17)."""
    if not ctx.int8.reverted:
        return artifact
    return replace(artifact, runtime_config={**artifact.runtime_config, "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"})


def _ov_int8_layers(model: Path) -> list[tuple[str, str]]:
    """The OpenVINO ops `_ov_int8` quantizes, named as `Int8Config.exclude` names them there (read once per
    model file: NNCF's analysis takes seconds on a large model, and the search and the accuracy control ask)."""
    stat = model.stat()
    return list(_ov_quantized_ops(str(model), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _ov_quantized_ops(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, str], ...]:
    return tuple(ov_quant.quantized_ops(read_onnx(Path(path)), transformer=summarize(Path(path)).transformer))


def _ov_int8_controlled(model: Path, out: Path, ctx: BuildContext, data: Dataset, score: Callable) -> Artifact:
    """`_ov_int8` with NNCF's accuracy control, within `ctx.max_accuracy_drop` of quality on `data`."""
    if ctx.max_accuracy_drop is None:
        raise ValueError("NNCF's accuracy control needs the accuracy budget (BuildContext.max_accuracy_drop)")
    converted = _ov_model(model, ctx)
    quantized = ov_quant.run_with_accuracy_control(converted.model, ctx.calibration, data, score,
                                                   ctx.max_accuracy_drop, ctx.int8,
                                                   transformer=summarize(model).transformer)
    return _ov_ir(converted, quantized, out, "int8")


def _ov_bf16(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    converted = _ov_model(model, ctx)
    return _ov_ir(converted, converted.model, out, "bf16", hint="bf16")


def _ov_weights(config: WeightOnlyConfig) -> Callable[[Path, Path, BuildContext], Artifact]:
    def build(model: Path, out: Path, ctx: BuildContext) -> Artifact:
        converted = _ov_model(model, ctx)
        return _ov_ir(converted, ov_quant.run_weight_only(converted.model, config), out, f"int{config.bits}")
    return build


def _torch_int8_inc(model: Path, out: Path, ctx: BuildContext) -> Artifact:
    """Quantizes the PyTorch model itself (`ctx.source`), not the ONNX model."""
    if ctx.source is None:
        raise EdgemlError("--quantizer inc quantizes a PyTorch model; MODEL is ONNX: give the PyTorch model "
                          "(factory + --weights, or a .pt2)")
    from edgeml.compress import torch_passes

    example = torch_passes.example_inputs(ctx.source, ctx.calibration)
    quantized = inc_backend.run(torch_passes.torch_module(ctx.source, "--quantizer inc"), example, ctx.calibration,
                                ctx.int8, ctx.max_accuracy_drop)
    out.mkdir(parents=True, exist_ok=True)
    config = write_program(quantized, example, out / "model.pt2")
    return Artifact("torch", "int8", out, "model.pt2",
                    runtime_config={"inputs": [s.name for s in ctx.source.inputs], **config})


_ORT, _OV, _INC = ort_quant.SUPPORTS, ov_quant.SUPPORTS, inc_backend.SUPPORTS

CPU = Target(
    name="cpu",
    description="x86-64 / arm64 CPUs, measured on this machine",
    candidates=(
        Candidate("onnxruntime-fp32", ONNXRUNTIME, "fp32", _ort_fp32,
                  method="the exported ONNX model as it is", as_given=True),
        Candidate("onnxruntime-int8", ONNXRUNTIME, "int8", _ort_int8, needs=_ORT.modules,
                  method="onnxruntime.quantization static QDQ, per-channel weights, calibrated (U8S8 on x86)",
                  quantizer=_ORT.name, layers=ort_quant.compute_layers, local_errors=ort_quant.local_errors,
                  calibrations=_ORT.calibrations, quantization_aware=True,
                  quantizers=Quantizers(qdq_quantizers.listed, qdq_quantizers.switchable)),
        Candidate("onnxruntime-int8-dynamic", ONNXRUNTIME, "int8", _ort_int8_dynamic, needs=_ORT.modules,
                  method="onnxruntime.quantization dynamic: per-channel INT8 weights, activations quantized "
                         "at run time",
                  quantizer=_ORT.name, applies=_dynamic_fits, layers=ort_quant.dynamic_layers),
        Candidate("onnxruntime-fp16", ONNXRUNTIME, "fp16", _ort_fp16, needs=_ORT.modules,
                  method="onnxruntime float16 converter: FP16 weights and activations (ops without an FP16 CPU "
                         "kernel run in FP32 between Casts), float32 inputs and outputs"),
        Candidate("onnxruntime-int4-weights", ONNXRUNTIME, "int4", _ort_int4_weights,
                  needs=(*_ORT.modules, "onnx_ir"),     # imported by onnxruntime's MatMulNBits quantizer
                  method=f"MatMulNBits: 4-bit symmetric MatMul weights in blocks of {INT4_WEIGHTS.group_size}, "
                         "round to nearest; activations in float",
                  quantizer=_ORT.name, applies=_weight_only_fits(("MatMul",), INT4_WEIGHTS.group_size)),
        Candidate("openvino-fp32", OPENVINO, "fp32", _ov_fp32,
                  method="OpenVINO IR, run with the f32 precision hint"),
        Candidate("openvino-int8", OPENVINO, "int8", _ov_int8, needs=_OV.modules,
                  method="NNCF post-training quantization of the OpenVINO IR (transformer scheme for transformers)",
                  quantizer=_OV.name, layers=_ov_int8_layers, local_errors=ov_quant.local_errors,
                  accuracy_control=AccuracyControl(_ov_int8_controlled, ov_quant.float_ops,
                                                   method="NNCF quantize_with_accuracy_control"),
                  calibrations=_OV.calibrations,
                  quantizers=_ov_quantizers(),
                  runs_also_as=(("openvino-int8-bf16", "int8+bf16"),)),
        Candidate("openvino-bf16", OPENVINO, "bf16", _ov_bf16,
                  method="the FP32 OpenVINO IR, run with the bf16 precision hint", applies=_bf16_fits),
        Candidate("openvino-int8-bf16", OPENVINO, "int8", _ov_int8_bf16, needs=_OV.modules,
                  method="openvino-int8's NNCF INT8 IR, run with the bf16 precision hint (the ops left in float "
                         "run in bf16)",
                  quantizer=_OV.name, applies=_bf16_fits, computes_in="int8+bf16"),
        Candidate("openvino-int8-weights", OPENVINO, "int8", _ov_weights(INT8_WEIGHTS), needs=_OV.modules,
                  method="NNCF weight compression: INT8 asymmetric MatMul weights per channel; activations in float",
                  quantizer=_OV.name, applies=_weight_only_fits(("MatMul", "Gemm"), 1)),
        Candidate("openvino-int4-weights", OPENVINO, "int4", _ov_weights(INT4_WEIGHTS), needs=_OV.modules,
                  method=f"NNCF weight compression: INT4 symmetric MatMul weights in groups of "
                         f"{INT4_WEIGHTS.group_size}, embeddings and last layer INT8; activations in float",
                  quantizer=_OV.name, applies=_weight_only_fits(("MatMul", "Gemm"), INT4_WEIGHTS.group_size)),
        Candidate("torch-int8-inc", TORCH, "int8", _torch_int8_inc, needs=_INC.modules,
                  method="Intel Neural Compressor PT2E static INT8 (autotune within the accuracy budget when labels "
                         "exist), run in PyTorch eager",
                  quantizer=_INC.name, opt_in=True),
    ),
    language_models=ORT_GENAI_LANGUAGE_MODELS + OPENVINO_LANGUAGE_MODELS + LLAMACPP_LANGUAGE_MODELS,
)
