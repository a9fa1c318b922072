"""Quantization of an OpenVINO model with NNCF.

- `run`: INT8 post-training quantization of weights and activations, calibrated; with
  `Int8Config.avoid_saturation` (x86 CPUs without VNNI), NNCF's overflow fix on the first layer; the ops
  named in `Int8Config.exclude` kept in float (NNCF's ignored scope); `Int8Config.range_estimator`,
  `asymmetric_activations` and `full_bias_correction` change NNCF's defaults (`SUPPORTS.calibrations`);
- `run_with_accuracy_control`: NNCF's own accuracy control (quantize_with_accuracy_control): `run`, then
  quantizers reverted to float, the most harmful first, until the quality drop is within a budget;
- `quantized_ops`: the ops `run` quantizes, which the accuracy-budget search may keep in float;
  `local_errors` ranks them in one pass for large models; `float_ops`: those a quantized model left in float;
- `run_weight_only`: INT8 or INT4 weights of MatMuls (and embeddings), activations left in float.

The ops are named by OpenVINO, not by the ONNX model: OpenVINO's ONNX frontend does not keep ONNX node names
on the ops that compute (the Convolution or MatMul of a Conv/Gemm with a bias is '<name>/WithoutBiases', a
ConvTranspose becomes 'ConvolutionBackpropData_<n>', a MatMul that yields a model output takes the output's
name). The ops the frontend names itself ('<type>_<n>') take a process-wide counter, different each time
the same file is read: `stable_names` renames them by their place in the graph, and every function here
applies it, so the names `quantized_ops` lists are the names `run` ignores.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edgeml.batching import batched
from edgeml.compress.base import Supports
from edgeml.compress.quantize.base import Int8Config, WeightOnlyConfig, calibration
from edgeml.inputs.data import Dataset

SUPPORTS = Supports(
    name="openvino", input="onnx", runtimes=("openvino",), precisions=("int8", "int4"), modules=("openvino", "nncf"),
    extra="edgeml[cpu]",
    # What the accuracy-budget search tries when `run`'s defaults miss the budget, most likely to help first: ranges
    # that minimise each activation's quantization error over a histogram (NNCF's default averages each sample's min
    # and max), asymmetric activations (signed activations that are not centred: Hardswish, SiLU, GELU outputs;
    # already NNCF's default for transformers), NNCF's channel alignment (cross-layer equalization: the channel ranges
    # of a convolution pair equalized, for depthwise CNNs), and the bias correction that also corrects the error of
    # the layers before each one (slower: one pass per layer).
    calibrations=(
        calibration("histogram ranges", range_estimator="HISTOGRAM"),
        calibration("asymmetric activations", asymmetric_activations=True),
        calibration("channel alignment", channel_alignment=True),
        calibration("full bias correction", full_bias_correction=True),
    ),
    weight_only=(8, 4), accuracy_control=True)

# Element types of the weights NNCF has quantized (stored as integers, dequantized by Convert/Subtract/Multiply).
_LOW_PRECISION = {"i8", "u8", "i4", "u4"}
# The ops between an integer weight and the op that reads it (Reshape/Transpose: a MatMul's reshaped weight).
_DECOMPRESSION = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose"}


def stable_names(model):
    """Rename the ops OpenVINO named itself ('Multiply_59': an op type and a process-wide counter) after their place
    in the graph ('Multiply_12'), which is the same on every read of the same model; returns `model`. The type in
    the name need not be the op's own: a Convolution that ov.convert_model fused with a batch norm's Multiply keeps
    the Multiply's name."""
    for position, op in enumerate(model.get_ordered_ops()):
        counted = re.fullmatch(r"([A-Z][A-Za-z0-9]*)_\d+", op.get_friendly_name())
        if counted:
            op.set_friendly_name(f"{counted.group(1)}_{position}")
    return model


def run(model, calibration: Dataset, config: Int8Config = Int8Config(), transformer: bool = False):
    """Quantize an openvino.Model; returns the quantized openvino.Model.

    `transformer` selects NNCF's transformer scheme (model_type=TRANSFORMER): SmoothQuant first, and
    the patterns it keeps in float (Add, LayerNorm parts, the attention scale) for accuracy.
    `config.avoid_saturation` applies NNCF's overflow fix to the first convolutions (half the 8-bit
    range for their weights), which NNCF recommends for AVX2/AVX-512 CPUs without VNNI; otherwise every
    weight uses the full 8-bit range. `config.exclude` names ops of `quantized_ops` to keep in float.
    """
    import nncf

    nncf.set_log_level(logging.ERROR)
    # NNCF draws its own progress bar on stdout, where edgeml prints its report.
    with contextlib.redirect_stdout(io.StringIO()), _untaken_branches(model):
        return nncf.quantize(stable_names(model), _calibration(calibration), **_settings(calibration, config,
                                                                                           transformer))


@contextlib.contextmanager
def _untaken_branches(model) -> Iterator[None]:
    """NNCF calibrates each branch of an If on the samples that take it, and reports a branch no calibration sample
    takes (a VAD's If on its sample rate, calibrated at one rate) as "Calibration dataset must not be empty": say
    what it means."""
    import nncf

    try:
        yield
    except nncf.ValidationError as e:
        if "must not be empty" not in str(e) or not any(op.get_type_name() == "If" for op in model.get_ordered_ops()):
            raise
        raise ValueError("NNCF calibrates each branch of the model's If ops on the calibration samples that take it, "
                         "and the calibration data never takes one of them (e.g. an If on an input that is the same "
                         "in every sample): give calibration data that takes every branch") from e


def run_with_accuracy_control(model, calibration: Dataset, validation: Dataset,
                              score: Callable[[list[int], list[np.ndarray]], np.ndarray], max_drop: float,
                              config: Int8Config = Int8Config(), transformer: bool = False):
    """`run`, then NNCF's accuracy control: quantizers (with the ops they feed) are ranked by how much quality
    reverting each one restores on `validation`, and reverted to float in that order until the drop of the
    quality against the float model is at most `max_drop` (absolute); returns the openvino.Model.

    `score(indices, outputs)` is the quality of each of the `validation` samples `indices` given the model's
    `outputs` on them (one array per model output, in the model's order); the quality is their mean. It may
    raise to stop the search (a time limit): NNCF then returns nothing.
    """
    import nncf

    def validate(compiled, items) -> tuple[float, list[float]]:
        # each output read with one sample per row, as edgeml reads a model's outputs (a time-major [T, 1, C] output
        # is one sample's [T, 1, C], not T rows)
        run = batched(lambda feeds: compiled(feeds).to_tuple(), 1, axes=validation.axes)
        index, outputs = [], []
        for i, _ in items:
            index.append(i)
            outputs.append(run({name: samples[i:i + 1] for name, samples in validation.inputs.items()}))
        scores = np.asarray(score(index, [np.concatenate(column) for column in zip(*outputs)]), dtype=np.float64)
        return float(scores.mean()), scores.tolist()

    nncf.set_log_level(logging.ERROR)
    items = [(i, validation.feeds(i, i + 1)) for i in range(len(validation))]
    settings = _settings(calibration, config, transformer)
    with contextlib.redirect_stdout(io.StringIO()), _untaken_branches(model):
        return nncf.quantize_with_accuracy_control(
            stable_names(model), _calibration(calibration), nncf.Dataset(items, lambda item: item[1]), validate,
            max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=settings["subset_size"],
            model_type=settings["model_type"], ignored_scope=settings["ignored_scope"], preset=settings["preset"],
            fast_bias_correction=settings["fast_bias_correction"],
            advanced_quantization_parameters=settings["advanced_parameters"])


def _calibration(calibration: Dataset):
    import nncf

    return nncf.Dataset([calibration.feeds(i, i + 1) for i in range(len(calibration))])


def _settings(calibration: Dataset, config: Int8Config, transformer: bool) -> dict:
    """nncf.quantize's arguments for `config`, shared by `run` and `run_with_accuracy_control`; the calibration
    fields left at their defaults give NNCF's defaults."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParameters, RangeEstimatorParametersSet

    ranges = getattr(RangeEstimatorParametersSet, config.range_estimator) if config.range_estimator else \
        RangeEstimatorParameters()
    return {"subset_size": min(len(calibration), config.max_calibration_samples),
            "model_type": _model_type(transformer),
            # validate=False: an op the frontend removed or renamed in another version is no error.
            "ignored_scope": nncf.IgnoredScope(names=list(config.exclude), validate=False),
            "preset": nncf.QuantizationPreset.MIXED if config.asymmetric_activations else None,
            "fast_bias_correction": not config.full_bias_correction,
            "advanced_parameters": AdvancedQuantizationParameters(
                overflow_fix=OverflowFix.FIRST_LAYER if config.avoid_saturation else OverflowFix.DISABLE,
                disable_channel_alignment=not config.channel_alignment,
                activations_range_estimator_params=ranges)}


def _model_type(transformer: bool):
    import nncf

    return nncf.ModelType.TRANSFORMER if transformer else None


def quantized_ops(model, transformer: bool = False) -> list[tuple[str, str]]:
    """(name, type) of the ops `run` quantizes, in graph order: each op NNCF puts quantizers in front of (on
    its inputs and its weights): Convolution, GroupConvolution, MatMul, and the Add, Multiply, Concat,
    Interpolate ... it quantizes on this model. Read from NNCF's quantizer setup (no calibration): ignoring
    all of them (`Int8Config.exclude`) leaves no quantizer, the float model.
    """
    from nncf.openvino.graph.nncf_graph_builder import GraphConverter
    from nncf.quantization.algorithms.min_max.algorithm import MinMaxQuantization

    stable_names(model)
    graph = GraphConverter.create_nncf_graph(model)
    algorithm = MinMaxQuantization(model_type=_model_type(transformer))
    algorithm.get_statistic_points(model, graph)        # also selects the OpenVINO backend the setup needs
    setup = algorithm.find_quantization_setup(model, graph)
    names = {name for point in setup.quantization_points.values()
             for name in point.directly_quantized_operator_node_names}
    ops = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()
           if op.get_friendly_name() in names]
    return list(dict.fromkeys(ops))


def float_ops(quantized: Path, layers: list[tuple[str, str]]) -> tuple[str, ...]:
    """The `layers` (from `quantized_ops`) that the quantized model (the IR `quantized`) computes in float: no
    FakeQuantize on their inputs and no integer weights."""
    import openvino as ov

    ops = {op.get_friendly_name(): op for op in ov.Core().read_model(str(quantized)).get_ordered_ops()}
    return tuple(name for name, _ in layers
                 if name in ops and not _activation_quantizers(ops[name]) and not _integer_weights(ops[name]))


def local_errors(quantized: Path, calibration: Dataset, layers: list[tuple[str, str]],
                 samples: int = 16) -> dict[str, float]:
    """How much each op's own quantization costs in the fully quantized model (the IR `quantized`): the largest
    noise (mean per-channel relative error of the FakeQuantize output against its input) among the quantizers
    of its inputs, over `samples` calibration samples, in one pass instead of one build per op.

    An op's quantizers are the FakeQuantize ops in front of it, or in front of the quantization-agnostic ops
    (MaxPool, Reshape, Transpose ..., NNCF's list) or Concat between them and it, where NNCF moves them.
    """
    import openvino as ov
    from nncf.openvino.graph.metatypes.groups import QUANTIZE_AGNOSTIC_OPERATIONS

    from edgeml.compress.quantize.onnxruntime_backend import relative_noise

    core = ov.Core()
    model = core.read_model(str(quantized))
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    agnostic = {name for metatype in QUANTIZE_AGNOSTIC_OPERATIONS for name in metatype.get_all_aliases()}
    quantizers = {name: _activation_quantizers(ops[name], agnostic) if name in ops else [] for name, _ in layers}
    fakes = {fq.get_friendly_name(): fq for found in quantizers.values() for fq in found}
    ports = {_port(port): port for fq in fakes.values() for port in (fq.input_value(0), fq.output(0))}
    model.add_outputs(list(ports.values()))              # one result per port, even when asked twice
    position = {_port(result.get_node().input_value(0)): k for k, result in enumerate(model.outputs)}
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runs = [compiled(calibration.feeds(i, i + 1)).to_tuple() for i in range(min(samples, len(calibration)))]

    def value(port) -> np.ndarray:
        return np.concatenate([run[position[_port(port)]] for run in runs])
    noise = {name: relative_noise(value(fq.input_value(0)), value(fq.output(0))) for name, fq in fakes.items()}
    return {name: max((noise[fq.get_friendly_name()] for fq in found), default=0.0)
            for name, found in quantizers.items()}


def _port(port) -> tuple[str, int]:
    return port.get_node().get_friendly_name(), port.get_index()


def _activation_quantizers(op, agnostic: set[str] | None = None) -> list:
    """The FakeQuantize ops on `op`'s activation inputs, looking through `agnostic` op types (default: NNCF's
    quantization-agnostic ops) and Concat."""
    if agnostic is None:
        from nncf.openvino.graph.metatypes.groups import QUANTIZE_AGNOSTIC_OPERATIONS

        agnostic = {name for metatype in QUANTIZE_AGNOSTIC_OPERATIONS for name in metatype.get_all_aliases()}
    found, seen, stack = [], set(), [value.get_node() for value in op.input_values()]
    while stack:
        node = stack.pop()
        if node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        kind = node.get_type_name()
        if kind == "FakeQuantize" and node.input_value(0).get_node().get_type_name() != "Constant":
            found.append(node)
        elif kind == "Concat":
            stack.extend(value.get_node() for value in node.input_values())
        elif kind in agnostic:
            stack.append(node.input_value(0).get_node())
    return found


def _integer_weights(op) -> bool:
    """Whether one of `op`'s inputs is a weight NNCF stored in integers."""
    return any(integer_weight(value.get_node()) for value in op.input_values())


def integer_weight(node, depth: int = 4) -> bool:
    """Whether `node` gives a weight NNCF stored in integers: a Constant of a low-precision type, dequantized on the
    way (Convert, Subtract, Multiply)."""
    kind = node.get_type_name()
    if kind == "Constant":
        return node.get_element_type().get_type_name() in _LOW_PRECISION
    return depth > 0 and kind in _DECOMPRESSION and any(integer_weight(v.get_node(), depth - 1)
                                                         for v in node.input_values())


def run_weight_only(model, config: WeightOnlyConfig = WeightOnlyConfig()):
    """Compress the weights of an openvino.Model; returns the compressed openvino.Model.

    8 bits: asymmetric, one scale per output channel (NNCF's default). 4 bits: symmetric, one scale per
    `config.group_size` weights; a layer whose input size is not a multiple of it gets the largest power
    of two that divides it (at least 32), and NNCF keeps the embeddings and the last layer in 8 bits.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        if config.bits == 8:
            return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        return nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=config.group_size,
            advanced_parameters=AdvancedCompressionParameters(group_size_fallback_mode=GroupSizeFallbackMode.ADJUST))
