"""The activation quantizers of an NNCF-quantized OpenVINO model, each one revertible to float.

NNCF quantizes an activation with a FakeQuantize op on it. Where the quantization error arises is where an accuracy
search reverts to float: a quantizer on a model input, on a model output, or on the output of a Concat, Add,
Multiply or Sigmoid, whose range one outlier or a mix of scales stretches. Each such FakeQuantize is one
"quantizer" here:

- `listed`: the quantizers of an IR, in graph order, with what each one quantizes;
- `reverted`: a copy of the model with some quantizers bypassed (their consumers read the float input);
- `switchable`: the IR with a bypass per quantizer, switched by one extra boolean input, compiled once: ranking
  N quantizers costs N runs of one compiled model, not N compilations. It computes in float with the quantizers
  simulated (a Select between a FakeQuantize's input and output keeps OpenVINO from fusing the FakeQuantize into
  an INT8 kernel), which ranks the quantizers by accuracy; it does not time them.

A weight is one too, where the float model is given: NNCF stores a quantized weight as an integer Constant with a
decompression chain (Convert, Subtract, Multiply), not a FakeQuantize; reverting it gives the op the float model's
weight (a per-channel range one large weight stretches crushes the small ones of that channel), and its bias the
float model's bias where NNCF's bias correction changed it for the quantized weight (reverting every quantizer of a
text recognizer left 7.8 % relative output error without that, none with it). Reverting the
activation FakeQuantize in front of a Convolution or MatMul makes OpenVINO compute that op in float, with the
decompressed weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import openvino

# The extra boolean input of `switchable`'s model: one entry per quantizer, True where it is bypassed.
MASK = "edgeml_reverted"
WEIGHTS = "/weights"        # a weight quantizer's name: the op's friendly name and this


def listed(ir: Path, float_model=None) -> list[tuple[str, str]]:
    """(name, what) of each quantizer of the IR at `ir` (an .xml file), in graph order: each activation FakeQuantize
    (one whose data input is not a Constant), and, when the openvino.Model `float_model` it was quantized from is
    given, each integer weight. `name` is the FakeQuantize's friendly name, or "<op>/weights"; `what` says what it
    quantizes: "input 'x'" for a model input, else the output of the op before it ("output of Concat 'cat_3'";
    "output 1 of Split 's'" for an op with several outputs), looking through nothing, or "weight of MatMul 'fc'"."""
    import openvino as ov

    model = ov.Core().read_model(str(ir))
    found = [(name, _what(fq.input_value(0))) for name, fq in _quantizers(model).items()]
    return found + [(name, f"weight of {port.get_node().get_type_name()} '{port.get_node().get_friendly_name()}'")
                    for name, [(port, _), *_] in _weights(model, float_model).items()]


def reverted(model, names: Iterable[str], float_model=None) -> openvino.Model:
    """A copy of the openvino.Model `model` in which each FakeQuantize named in `names` is bypassed (every consumer
    of its output reads its data input instead) and each weight named gets the float weight of `float_model`.
    Raises ValueError for a name that is not a quantizer of the model; `model` itself is not changed."""
    from openvino import opset13 as ops

    copy = model.clone()
    quantizers, weights = _named(copy, names, float_model)
    for fq in quantizers:
        for consumer in fq.output(0).get_target_inputs():
            consumer.replace_source_output(fq.input_value(0))
    for port, value in (replacement for replacements in weights for replacement in replacements):
        port.replace_source_output(ops.constant(value).output(0))
    copy.validate_nodes_and_infer_types()
    return copy


def switchable(ir: Path, names: list[str], float_model=None) -> Callable[[dict[str, np.ndarray], np.ndarray],
                                                                        list[np.ndarray]]:
    """run(feeds, mask): the IR at `ir` with the quantizer `names[i]` reverted wherever `mask[i]` is True (a bool
    array of len(names)). Compiled once, on the CPU in f32 without dynamic quantization; run() returns the model's
    outputs (copies) in the order edgeml's OpenVINO runner returns them. `feeds` holds the model's own inputs; run()
    feeds the mask."""
    import openvino as ov
    from openvino import opset13 as ops

    model = ov.Core().read_model(str(ir))
    quantizers, weights = _named(model, names, float_model)
    switch = ops.parameter([len(names)], ov.Type.boolean, name=MASK)
    switch.output(0).set_names({MASK})
    axis = ops.constant(np.int64(0))

    def bypass(i: int, float_value, quantized_value, name: str):
        return ops.select(ops.gather(switch, ops.constant(np.int64(i)), axis), float_value, quantized_value,
                          name=f"{name}/{MASK}")
    for i, fq in enumerate(quantizers):
        consumers = fq.output(0).get_target_inputs()          # before the Select becomes one of them
        select = bypass(i, fq.input_value(0), fq.output(0), fq.get_friendly_name())
        for consumer in consumers:
            consumer.replace_source_output(select.output(0))
    for i, replacements in enumerate(weights, len(quantizers)):
        for port, value in replacements:
            port.replace_source_output(bypass(i, ops.constant(value), port.get_source_output(),
                                              port.get_node().get_friendly_name()).output(0))
    model.add_parameters([switch])
    model.validate_nodes_and_infer_types()
    # without dynamic quantization, as a build with reverted quantizers runs (targets.cpu): it would quantize the
    # float input of a MatMul with integer weights again
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                      "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"})
    request = compiled.create_infer_request()
    inputs = [port.get_any_name() for port in compiled.inputs if MASK not in port.get_names()]
    order = [*(fq.get_friendly_name() for fq in quantizers), *(f"{r[0][0].get_node().get_friendly_name()}{WEIGHTS}"
                                                                for r in weights)]
    position = np.array([order.index(name) for name in names])   # mask entries in `names` order -> model order

    def run(feeds: dict[str, np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(names),):
            raise ValueError(f"the mask has shape {mask.shape}, not ({len(names)},): one entry per quantizer")
        reordered = np.zeros(len(names), dtype=bool)
        reordered[position] = mask
        # share_outputs=False: copies, as the request writes its next outputs over the same buffers
        result = request.infer({**{name: feeds[name] for name in inputs}, MASK: reordered}, share_outputs=False)
        return [np.asarray(value) for value in result.to_tuple()]
    return run


def _quantizers(model) -> dict:
    """The activation FakeQuantize ops of `model` by friendly name, in graph order."""
    return {op.get_friendly_name(): op for op in model.get_ordered_ops()
            if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() != "Constant"}


def _weights(model, float_model) -> dict:
    """"<op>/weights" -> what reverting it replaces, (input port, float value) pairs: the op's weight port and the
    float model's weight, then its bias (an Add after it) where the float model's differs, for each op of `model`
    that reads a weight NNCF stored in integers and whose weight in `float_model` (an op of the same name) is a
    Constant; {} without one."""
    from edgeml.compress.quantize.openvino_backend import integer_weight

    if float_model is None:
        return {}
    floats = {op.get_friendly_name(): op for op in float_model.get_ordered_ops()}
    found = {}
    for op in model.get_ordered_ops():
        original = floats.get(op.get_friendly_name())
        for k, value in enumerate(op.input_values()):
            weight = _constant(original.input_value(k).get_node()) if original is not None and \
                k < original.get_input_size() and integer_weight(value.get_node()) else None
            if weight is not None and tuple(weight.shape) == tuple(value.get_partial_shape().to_shape()):
                found[f"{op.get_friendly_name()}{WEIGHTS}"] = [(op.input(k), weight), *_biases(op, floats)]
    return found


def _biases(op, floats: dict) -> list:
    """(input port, float value) of each bias of `op` (a Constant an Add adds to its output) that differs from the
    bias of the Add of the same name in the float model (`floats`: its ops by name): what bias correction changed."""
    changed = []
    for consumer in op.output(0).get_target_inputs():
        add = consumer.get_node()
        original = floats.get(add.get_friendly_name())
        if add.get_type_name() != "Add" or original is None or original.get_type_name() != "Add":
            continue
        k = 1 - consumer.get_index()
        bias, float_bias = _constant(add.input_value(k).get_node()), _constant(original.input_value(k).get_node())
        if bias is not None and float_bias is not None and bias.shape == float_bias.shape \
                and not np.array_equal(bias, float_bias):
            changed.append((add.input(k), float_bias))
    return changed


def _constant(node) -> np.ndarray | None:
    """The float value of a Constant (through a Convert of a compressed one), or None."""
    if node.get_type_name() == "Convert" and node.input_value(0).get_node().get_type_name() == "Constant":
        return node.input_value(0).get_node().get_data().astype(np.float32)
    if node.get_type_name() == "Constant" and node.get_element_type().is_real():
        return node.get_data().astype(np.float32)
    return None


def _named(model, names: Iterable[str], float_model=None) -> tuple[list, list]:
    """(the activation FakeQuantize ops, what reverting each weight replaces (`_weights`)) of `model` named `names`,
    in their order; ValueError for the others."""
    names = list(names)
    quantizers, weights = _quantizers(model), _weights(model, float_model)
    unknown = [name for name in names if name not in quantizers and name not in weights]
    if unknown:
        raise ValueError(f"not a quantizer of the model: {', '.join(map(repr, unknown))}")
    return [quantizers[name] for name in names if name in quantizers], [weights[name] for name in names
                                                                         if name in weights]


def _what(value) -> str:
    """What the FakeQuantize reading the port `value` quantizes, in words."""
    node = value.get_node()
    if node.get_type_name() == "Parameter":
        return f"input '{node.get_friendly_name()}'"
    port = f" {value.get_index()}" if node.get_output_size() > 1 else ""
    return f"output{port} of {node.get_type_name()} '{node.get_friendly_name()}'"
