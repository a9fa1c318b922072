"""Quantization with onnxruntime.quantization.

- `run`: static INT8, QDQ format, per-channel weights, calibrated. QDQ with per-channel weights is the
  format ONNX Runtime runs fastest on x86 CPUs; QOperator and dynamic quantization were several times
  slower than FP32 on small CNNs in our checks.
- `run_dynamic`: dynamic INT8, for models whose compute is in MatMul/Gemm/LSTM (transformers, RNNs).
- `run_weight_only`: 4-bit (or 8-bit) blockwise MatMul weights, MatMulNBits (transformers).

`run` and `run_dynamic` quantize weights to 7 bits (`reduce_range`) when `Int8Config.avoid_saturation`
says the CPU's u8*s8 kernels can saturate (x86 without VNNI/AMX: VPMADDUBSW sums pairs of products in
16 bits; 2 * 255 * 64 < 32767 cannot overflow), as onnxruntime's quantization guide recommends there;
elsewhere the full 8-bit range.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgeml.compress.quantize import Int8Config, WeightOnlyConfig
from edgeml.inputs.data import Dataset

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


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
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(model, prepared)
        quantize_static(
            str(prepared), str(output), calibration_reader(calibration, config),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, METHODS[config.calibration_method]),
            nodes_to_exclude=list(config.exclude),
            reduce_range=config.avoid_saturation,
        )
    return output


# Layers the accuracy-budget search may keep in float: the ones that carry the compute.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def compute_layers(model: Path) -> list[tuple[str, str]]:
    """(node name, op type) of the compute layers, in graph order, as `run` will see them.

    Read after the same pre-processing `run` applies, so the names match `Int8Config.exclude`.
    """
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(model, prepared)
        graph = onnx.load(str(prepared), load_external_data=False).graph
    return [(n.name, n.op_type) for n in graph.node if n.op_type in COMPUTE_OPS and n.name]


def run_dynamic(model: Path, output: Path, config: Int8Config = Int8Config()) -> Path:
    """INT8 weights; activations are quantized at run time from their own range, so no calibration.

    onnxruntime recommends it for transformers and RNNs. Weights are signed 8-bit (activations are
    unsigned: U8S8), the pairing ONNX Runtime's x86 kernels run fastest; MatMul, Gemm, LSTM and
    Attention are quantized, MatMuls of two activations (attention scores) stay in float.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(model, prepared)
        quantize_dynamic(str(prepared), str(output), per_channel=config.per_channel,
                         weight_type=QuantType.QInt8, nodes_to_exclude=list(config.exclude),
                         reduce_range=config.avoid_saturation)
    return output


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


def prepare(model: Path, prepared: Path) -> None:
    """Shape inference and graph clean-up, as onnxruntime recommends before quantizing.

    Its symbolic shape inference fails on some exported transformers (a Reshape to a shape computed at
    run time); ONNX shape inference alone then still gives quantization the shapes it needs.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model), str(prepared))
    except Exception:  # an AssertionError or a bare Exception from symbolic shape inference
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)


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
    """How much each compute layer's own quantization costs in the fully quantized model: the larger
    of the Q/DQ noise on its input activation and on its output (mean per-channel relative error of
    the dequantized tensor against the float tensor it came from), over `samples` calibration samples.

    One run of the model instead of one build per layer: what ranks layers in large models. Keeping
    a layer in float removes exactly those Q/DQ pairs.
    """
    import onnx

    graph = onnx.load(str(quantized)).graph
    producer = {o: n for n in graph.node for o in n.output}
    quantize_of = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    dequantize_of = {n.input[0]: n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    names = dict(layers)
    pairs: dict[str, list[tuple[str, str]]] = {}       # layer -> (float tensor, its Q/DQ value)
    for node in graph.node:
        if node.name not in names:
            continue
        pairs[node.name] = []
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            pairs[node.name].append((q.input[0], node.input[0]))
        out = dequantize_of.get(quantize_of.get(node.output[0], ""))
        if out is not None:
            pairs[node.name].append((node.output[0], out))
    tensors = sorted({t for layer in pairs.values() for pair in layer for t in pair})
    with tempfile.TemporaryDirectory() as tmp:
        values = _tensor_values(quantized, tensors, calibration, min(samples, len(calibration)),
                                Path(tmp) / "exposed.onnx")
    return {layer: max((_noise(values[f], values[d]) for f, d in layer_pairs), default=0.0)
            for layer, layer_pairs in pairs.items()}


def _noise(reference, got) -> float:
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
    values.update({name: data.inputs[name][:count] for name in names if name in data.inputs})
    return values
