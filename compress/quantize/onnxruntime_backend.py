"""Quantization with onnxruntime.quantization.

- `run`: static INT8, QDQ format, per-channel weights, calibrated (min-max by default; `Int8Config.calibration_method`
  and `mean_ranges` choose another: `SUPPORTS.calibrations`); the quantizers `Int8Config.reverted` names reverted to
  float (qdq_quantizers). QDQ with per-channel weights is the
  format ONNX Runtime runs fastest on x86 CPUs; QOperator and dynamic quantization were several times
  slower than FP32 on small CNNs in our checks. Weights are signed and symmetric (S8); activations are
  unsigned (U8) on x86, signed elsewhere. U8S8 is the pairing ONNX Runtime's x86 int8 kernels are built
  for: S8S8 ran 1.7x to 3.3x slower than U8S8 at the same quality (measured 2026-12-05 on an AMD EPYC
  with AVX-512 VNNI and BF16, onnxruntime 1.32, batch 1, 1 thread, median over 15 interleaved rounds of
  the per-round U8S8/S8S8 time ratio): EfficientNet-Lite0 0.54, ResNet-18 0.38, MobileNetV2 0.60,
  PP-LCNet orientation 0.40, PP-OCR direction classifier 0.60, YOLOv8n 0.30. Mean cosine to FP32 differed
  by less than 1e-4 on each, top-1 agreement (classifiers) not at all. (Both ran slower than FP32 on the
  two PP-LCNet/MobileNetV3 classifiers, S8S8 also on YOLOv8n: the budget and the timing decide.)
- `run_dynamic`: dynamic INT8, for models whose compute is in MatMul/Gemm/LSTM (transformers, RNNs).
- `run_weight_only`: 4-bit (or 8-bit) blockwise MatMul weights, MatMulNBits (transformers).

`run` and `run_dynamic` quantize weights to 7 bits (`reduce_range`) when `Int8Config.avoid_saturation`
says the CPU's u8*s8 kernels can saturate (x86 without VNNI/AMX: VPMADDUBSW sums pairs of products in
16 bits; 2 * 255 * 64 < 32767 cannot overflow), as onnxruntime's quantization guide recommends there;
elsewhere the full 8-bit range.

`run` and `run_dynamic` (and `prepare`) check the graph after every pre-processing step and after the
quantizer, and fall back to less pre-processing, then to the model converted to opset 13, when a step breaks
it (onnx_attempts); `static` and `dynamic` return which attempt worked and why the others failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from edgeml.compress.base import Supports
from edgeml.compress.quantize import onnx_attempts as attempts
from edgeml.compress.quantize import qdq_quantizers
from edgeml.compress.quantize.base import Int8Config, WeightOnlyConfig, calibration
from edgeml.inputs.data import Dataset
from edgeml.measure import cpu_features

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}   # onnxruntime's calibrators
HISTOGRAMS = ("entropy", "percentile")      # the calibrations that hold every sample's activations at once

SUPPORTS = Supports(
    name="ort", input="onnx", runtimes=("onnxruntime", "tensorrt"), precisions=("int8", "int4"),
    modules=("onnxruntime",), extra="edgeml", calibration_methods=tuple(METHODS),
    # What the accuracy-budget search tries when `static`'s default calibration misses the budget, cheapest first
    # (the histogram methods are slower on large models). Left out: the Distribution calibrator (made for float8:
    # worse than min-max at INT8 in our checks) and SmoothQuant (extra_options, which needs neural-compressor's ONNX
    # adaptor, gone from neural-compressor 3).
    calibrations=(
        calibration("min-max averaged over samples", calibration_method="minmax", mean_ranges=True),
        calibration("percentile calibration", calibration_method="percentile"),
        calibration("entropy calibration", calibration_method="entropy"),
    ),
    dynamic=True, weight_only=(4,))


def calibration_reader(calibration: Dataset, config: Int8Config):
    """onnxruntime's CalibrationDataReader over the first `config.max_calibration_samples` samples."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(range(min(len(calibration), config.max_calibration_samples)))

        def get_next(self):
            i = next(self.samples, None)
            return None if i is None else calibration.feeds(i, i + 1)

    return Reader()


def run(model: Path, output: Path, calibration: Dataset, config: Int8Config = Int8Config()) -> Path:
    return static(model, output, calibration, config).model


def static(model: Path, output: Path, calibration: Dataset, config: Int8Config = Int8Config()) -> attempts.Outcome:
    """`run`, and which pre-processing gave a valid graph and why the ones tried before failed (onnx_attempts)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    def quantizer(method: str) -> attempts.Step:
        def quantize(prepared: Path, out: Path) -> None:
            settings = config if method not in HISTOGRAMS else replace(
                config, max_calibration_samples=histogram_samples(prepared, calibration, config))
            quantize_static(
                str(prepared), str(out), calibration_reader(calibration, settings),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=QuantType.QUInt8 if cpu_features.architecture() == "x86" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                nodes_to_exclude=list(config.exclude),
                reduce_range=config.avoid_saturation,
                use_external_data_format=attempts.has_external_data(prepared),
                extra_options={"CalibMovingAverage": True} if config.mean_ranges and method == "minmax" else {},
            )
        return attempts.Step(f"quantize_static ({method} calibration)", quantize)
    # The histogram methods cannot bin the -3.4e38 or -inf of an additive attention mask (numpy: "Too many bins
    # for data range"): min-max calibration is their fallback.
    methods = dict.fromkeys([config.calibration_method, "minmax"])
    # Q/DQ with one scale per channel (an `axis`) exists from opset 13, per tensor from opset 10.
    outcome = attempts.quantized(model, output, [quantizer(m) for m in methods],
                                 attempts.QUANTIZER_OPSET if config.per_channel else 10,
                                 sample_shapes(calibration))
    if config.reverted:
        qdq_quantizers.revert(outcome.model, model, config.reverted, outcome.model)
    return outcome


def histogram_samples(model: Path, calibration: Dataset, config: Int8Config) -> int:
    """How many calibration samples a histogram calibration (`HISTOGRAMS`) takes: `config.max_calibration_samples`, or
    fewer where their activations would not fit in half the memory available. onnxruntime's histogram calibrators
    keep every intermediate tensor of every sample until the last one (min-max can work in chunks): entropy
    calibration on 64 samples of 9 s audio took 23 GB and the kernel killed the run."""
    import onnx

    wanted = min(len(calibration), config.max_calibration_samples)
    tensors = [o for n in onnx.load(str(model), load_external_data=False).graph.node for o in n.output if o]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            values = _tensor_values(model, tensors, calibration, 1, Path(tmp) / "exposed.onnx")
        except Exception:        # a model over protobuf's 2 GB, or one whose outputs cannot all be exposed: as asked
            return wanted
    per_sample = sum(v.nbytes for v in values.values())
    return max(1, min(wanted, int(0.5 * available_memory() / max(per_sample, 1))))


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux's MemAvailable; elsewhere the free pages)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def quantized_ops() -> frozenset[str]:
    """The op types `quantize_static` quantizes in QDQ format (its default `op_types_to_quantize`: the union of
    onnxruntime's QLinear and QDQ registries). Keeping every node of these types in float gives the float model."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


def _followers() -> frozenset[str]:
    """Op types whose QDQ handler quantizes only what its input's quantization implies (a pooled, reshaped or
    activated copy of a tensor another node asked to quantize): their input's Q/DQ is not theirs."""
    from onnxruntime.quantization.operators.activation import QDQRemovableActivation
    from onnxruntime.quantization.operators.direct_q8 import QDQDirect8BitOp
    from onnxruntime.quantization.registry import QDQRegistry

    return frozenset(op for op, handler in QDQRegistry.items()
                     if issubclass(handler, (QDQDirect8BitOp, QDQRemovableActivation)))


def compute_layers(model: Path) -> list[tuple[str, str]]:
    """(node name, op type) of every node `run` may quantize, in graph order, as `run` will see them: the
    compute layers and the Add, Concat, Mul, activations, pooling, Resize ... around them. Keeping all of
    them in float (`Int8Config.exclude`) gives the float model.

    Read after the same pre-processing `run` applies, so the names match `Int8Config.exclude`. Unnamed
    nodes cannot be excluded by name and are not listed.
    """
    import onnx

    ops = quantized_ops()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(model, prepared)
        graph = onnx.load(str(prepared), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in ops and n.name]


def run_dynamic(model: Path, output: Path, config: Int8Config = Int8Config()) -> Path:
    return dynamic(model, output, config).model


def sample_shapes(data: Dataset | None) -> dict[str, tuple[int, ...]] | None:
    """One sample's input shapes, as the model takes it: for onnx_attempts' static-input-shapes attempt."""
    return None if data is None or not len(data) else {name: v.shape for name, v in data.feeds(0, 1).items()}


def dynamic(model: Path, output: Path, config: Int8Config = Int8Config(),
            calibration: Dataset | None = None) -> attempts.Outcome:
    """INT8 weights; activations are quantized at run time from their own range, so no calibration
    (`calibration`, when given, lends one sample's input shapes to onnx_attempts' static-shape attempt).

    onnxruntime recommends it for transformers and RNNs. Weights are signed 8-bit (activations are
    unsigned: U8S8), the pairing ONNX Runtime's x86 kernels run fastest; `dynamic_layers` lists what is
    quantized (MatMul and Gemm with constant weights, LSTM, Conv, embedding Gathers ...), MatMuls of two
    activations (attention scores) and GRUs stay in float.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def quantize(prepared: Path, out: Path) -> None:
        quantize_dynamic(str(prepared), str(out), per_channel=config.per_channel,
                         weight_type=QuantType.QInt8, nodes_to_exclude=_dynamic_exclusions(prepared, config.exclude),
                         reduce_range=config.avoid_saturation,
                         use_external_data_format=attempts.has_external_data(prepared))
    # DynamicQuantizeLinear exists from opset 11.
    return attempts.quantized(model, output, [attempts.Step("quantize_dynamic", quantize)], 11,
                              sample_shapes(calibration))


def dynamic_layers(model: Path) -> list[tuple[str, str]]:
    """(node name, op type) of every node `dynamic` quantizes, in graph order, read after the same
    pre-processing (constant folding makes an exported LSTM's weights constants). Keeping all of them in float
    (`Int8Config.exclude`) gives the float model.

    onnxruntime's IntegerOps quantizers, by op type: MatMul with a constant weight (MatMulConstBOnly, its
    default), Gemm that it rewrites as such a MatMul (alpha = beta = 1, no transA), LSTM with constant 3-D W and
    R, Gather from a constant table, and every Conv, Attention and EmbedLayerNormalization. A Transpose follows its
    input's quantization and is not listed (nothing left quantized, nothing for it to follow).
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        attempts.prepared(model, prepared, 11)
        graph = onnx.load(str(prepared), load_external_data=False).graph
    constants = {t.name: t for t in graph.initializer}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)

    def constant(name: str, rank: int | None = None) -> bool:
        t = constants.get(name)
        return t is not None and t.data_type in floats and (rank is None or len(t.dims) == rank)

    def quantized(node) -> bool:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMul":
            return constant(node.input[1])
        if node.op_type == "Gemm":
            return (attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0
                    and not attributes.get("transA", 0) and constant(node.input[1]))
        if node.op_type == "LSTM":
            return constant(node.input[1], 3) and constant(node.input[2], 3)
        if node.op_type == "Gather":
            return constant(node.input[0])
        return node.op_type in ("Conv", "Attention", "EmbedLayerNormalization")
    return [(n.name, n.op_type) for n in graph.node if n.name and quantized(n)]


def _dynamic_exclusions(prepared: Path, exclude: tuple[str, ...]) -> list[str]:
    """`exclude` as quantize_dynamic names them: it rewrites a Gemm named G as a MatMul named G_MatMul first."""
    import onnx

    if not exclude:
        return []
    gemms = {n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node if n.op_type == "Gemm"}
    return [*exclude, *(f"{name}_MatMul" for name in exclude if name in gemms)]


def run_weight_only(model: Path, output: Path, config: WeightOnlyConfig = WeightOnlyConfig()) -> Path:
    """MatMul weights in `config.bits` bits, symmetric, one scale per `config.group_size` weights along K
    (round to nearest); the MatMuls become MatMulNBits. Activations stay in float.

    accuracy_level 4 lets ONNX Runtime's CPU kernel quantize the activations to int8 blockwise inside
    MatMulNBits (its fastest CPU path); without it 4-bit MatMuls ran slower than FP32 in our checks.
    """
    import onnx

    with _root_logging_kept():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(model)), bits=config.bits, block_size=config.group_size,
                                     is_symmetric=True, accuracy_level=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(output), use_external_data_format=False)
    return output


def prepare(model: Path, prepared: Path) -> attempts.Outcome:
    """Shape inference and graph clean-up, as onnxruntime recommends before quantizing: the first
    pre-processing whose every step gives a valid graph (onnx_attempts.preprocessing).

    `run` tries the same pre-processing in the same order, so the node names read here are the ones it
    quantizes (unless the quantizer itself breaks the graph this pre-processing gives).
    """
    return attempts.prepared(model, prepared)


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """matmul_nbits_quantizer calls logging.basicConfig(level=INFO) on import, which would print a line
    for every node it visits (and other libraries' INFO messages) on stderr; put the root logger back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def local_errors(quantized: Path, calibration: Dataset, layers: list[tuple[str, str]],
                 samples: int = 16) -> dict[str, float]:
    """How much each listed node's own quantization costs in the fully quantized model: the largest Q/DQ
    noise (mean per-channel relative error of the dequantized tensor against the float tensor it came
    from) among the activations it asked to quantize, over `samples` calibration samples.

    A node asks for its inputs and outputs, except a follower (pooling, reshapes, Relu/Clip: see
    `_followers`), which only re-quantizes its output with its input's scale: its input's noise belongs to
    the node that asked for it. A node reading a follower's output also pays for the noise upstream of the
    follower (a Concat's crushed output reaches a Gemm through a Flatten with the same scale, and the Gemm
    asks for it again if the Concat alone is kept in float). One run of the model instead of one build per
    layer: what ranks layers in large models. Nodes the quantizer removed (a Relu folded into its
    producer's Q/DQ) cost nothing of their own.
    """
    import onnx

    graph = onnx.load(str(quantized)).graph
    producer = {o: n for n in graph.node for o in n.output}
    quantize_of = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    dequantize_of = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    names, followers = dict(layers), _followers()
    pairs: dict[str, list[tuple[str, str]]] = {name: [] for name in names}   # layer -> (float tensor, its Q/DQ)

    def upstream(tensor: str) -> Iterator[tuple[str, str]]:
        """(float tensor, its Q/DQ value) for a dequantized `tensor`, then through the followers that made it."""
        while True:
            dq = producer.get(tensor)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear":
                return
            yield q.input[0], tensor
            made_by = producer.get(q.input[0])
            if made_by is None or made_by.op_type not in followers or not made_by.input:
                return
            tensor = made_by.input[0]

    for node in graph.node:
        if node.name not in names:
            continue
        for tensor in node.input if node.op_type not in followers else ():
            pairs[node.name].extend(upstream(tensor))
        for tensor in node.output:
            out = dequantize_of.get(quantize_of.get(tensor, ""))
            if out is not None:
                pairs[node.name].append((tensor, out))
    tensors = sorted({t for layer in pairs.values() for pair in layer for t in pair})
    with tempfile.TemporaryDirectory() as tmp:
        values = _tensor_values(quantized, tensors, calibration, min(samples, len(calibration)),
                                Path(tmp) / "exposed.onnx")
    return {layer: max((relative_noise(values[f], values[d]) for f, d in layer_pairs), default=0.0)
            for layer, layer_pairs in pairs.items()}


def relative_noise(reference, got) -> float:
    """Mean over channels (axis 1) of each channel's relative error: a few huge channels cannot hide
    the others being crushed to zero."""
    import numpy as np

    axis = 1 if reference.ndim > 1 else 0
    f = np.moveaxis(reference, axis, 0).reshape(reference.shape[axis], -1)
    q = np.moveaxis(got, axis, 0).reshape(got.shape[axis], -1)
    norms = np.linalg.norm(f, axis=1)
    live = norms > 1e-12
    return float(np.mean(np.linalg.norm(q - f, axis=1)[live] / norms[live])) if live.any() else 0.0


def _tensor_values(model: Path, names: list[str], data: Dataset, count: int, scratch: Path) -> dict:
    """The values `names` take in `model` on the first `count` samples of `data` (graph inputs: the data
    itself), one sample per run (models may have a fixed batch of 1)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(model))
    produced = {o for n in proto.graph.node for o in n.output}
    present = {o.name for o in proto.graph.output}
    extra = [n for n in names if n in produced and n not in present]
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in extra)
    onnx.save(proto, str(scratch))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(scratch), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    runs = [session.run(outputs, data.feeds(i, i + 1)) for i in range(count)]
    values = {name: np.concatenate([run[k] for run in runs]) for k, name in enumerate(outputs)}
    fed = [data.feeds(i, i + 1) for i in range(count)]            # graph inputs as the model took them
    values.update({name: np.concatenate([f[name] for f in fed]) for name in names if name in data.inputs})
    return values
