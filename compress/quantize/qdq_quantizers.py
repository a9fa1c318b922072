"""The quantizers of an ONNX Runtime QDQ model, each of which the accuracy-budget search may revert to float: the
QuantizeLinear/DequantizeLinear pair on an activation (a model input or output, a Conv's, Concat's, Add's,
Sigmoid's ... output), and the DequantizeLinear of a weight.

Keeping whole layers in float cannot find an error that arises in one activation's range, or one spread over many
small ones; reverting a quantizer removes exactly its own error. An activation's pair is dropped (its consumers
read the float tensor); a weight's DequantizeLinear is replaced by the float weight, read from the model as the
quantizer saw it (`onnxruntime_backend.prepare`; a weight that pre-processing made, e.g. a batch norm folded into
a Conv, is there too). A node that then reads a float input runs in float, and its other constant
DequantizeLinears (weight, bias) are folded into float initializers, so ONNX Runtime does not dequantize them on
every run. Biases (int32, scaled by the input's and the weight's scales) are not quantizers of their own.

`switchable` builds one model in which every listed quantizer has a bypass (a Where) switched by a boolean input:
ranking N quantizers costs N runs of one session, not N builds. It computes in float with the quantizers simulated
(ONNX Runtime fuses no Q/DQ whose value passes through a Where), which ranks them; it is never timed.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SWITCHES = "edgeml_reverted"       # the switchable model's boolean input: one value per quantizer


def listed(quantized: Path, source: Path) -> list[tuple[str, str]]:
    """(name, what it quantizes) of each quantizer of the QDQ model `quantized`, built from `source`, in graph order:
    an activation's is named by the float tensor it quantizes, a weight's by its float initializer."""
    graph = _load(quantized).graph
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    found = {name: _activation(nodes[0], producer, outputs, graph) for name, nodes in _activations(graph).items()}
    found |= {name: f"weight '{name}'" for name in _weights(graph, _source(source).floats)}
    position = {name: k for k, n in enumerate(graph.node)
                for name in (n.input[0], n.input[0].removesuffix("_quantized"))
                if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    return sorted(found.items(), key=lambda item: position[item[0]])


def _activations(graph) -> dict[str, list]:
    """Each activation quantizer: the QuantizeLinear nodes that share one scale (a pooled, reshaped or flattened
    copy of a tensor is re-quantized with its input's scale: reverting one without the other leaves the range in
    place), named by the first one's tensor."""
    groups: dict[str, list] = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            groups.setdefault(node.input[1], []).append(node)
    return {nodes[0].input[0]: nodes for nodes in groups.values()}


def _weights(graph, floats: dict[str, np.ndarray]) -> dict[str, object]:
    """Each weight quantizer: its float initializer's name -> its DequantizeLinear (not a bias's: int32)."""
    import onnx

    int32 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT32}
    found = {}
    for node in graph.node:
        weight = node.input[0].removesuffix("_quantized")
        if (node.op_type == "DequantizeLinear" and node.input[0] != weight and weight in floats
                and node.input[0] not in int32):
            found[weight] = node
    return found


def revert(quantized: Path, source: Path, names: Iterable[str], output: Path) -> Path:
    """Write `quantized` with the quantizers `names` (from `listed`) reverted to float to `output`; a name that is not
    one of its quantizers raises ValueError."""
    import onnx

    model = _load(quantized)
    graph = model.graph
    names = set(names)
    source = _source(source)
    activations, weights = _activations(graph), _weights(graph, source.floats)
    unknown = sorted(names - set(activations) - set(weights))
    if unknown:
        raise ValueError(f"not a quantizer of {quantized.name}: {', '.join(unknown)}")
    nodes = list(graph.node)
    for q in (q for name in names & set(activations) for q in activations[name]):
        tensor = q.input[0]
        for k, node in enumerate(nodes):
            if node.op_type == "DequantizeLinear" and node.input[0] == q.output[0]:
                nodes[k] = onnx.helper.make_node("Identity", [tensor], list(node.output), name=f"{node.name}_reverted")
        nodes.remove(q)
        clamp = source.clamp(graph, tensor, f"{tensor}_unclamped", tensor)
        if clamp is not None:
            made_by = next(n for n in nodes if tensor in n.output)
            made_by.output[list(made_by.output).index(tensor)] = f"{tensor}_unclamped"
            nodes.insert(nodes.index(made_by) + 1, clamp)
    for name in names & set(weights):
        dq = weights[name]
        nodes.remove(dq)
        graph.initializer.append(onnx.numpy_helper.from_array(source.floats[name], dq.output[0]))
    del graph.node[:]
    graph.node.extend(nodes)
    _fold_float_nodes(graph, source.floats)
    _drop_unused_initializers(graph)
    onnx.save(model, str(output))
    return output


def switchable(quantized: Path, source: Path, names: list[str]) -> Callable[[dict, np.ndarray], list[np.ndarray]]:
    """run(feeds, mask): `quantized` with quantizer `names[i]` reverted wherever `mask[i]`, in one ONNX Runtime
    session (see the module's docstring); the outputs in the model's order."""
    import onnx
    import onnxruntime as ort

    model = _load(quantized)
    graph = model.graph
    source = _source(source)
    index = {name: i for i, name in enumerate(names)}
    graph.input.append(onnx.helper.make_tensor_value_info(SWITCHES, onnx.TensorProto.BOOL, [len(names)]))
    added = []

    def bypass(name: str, dequantized: str, value: str) -> str:
        """`dequantized` (a DequantizeLinear output) becomes Where(switch of `name`, `value`, the dequantized)."""
        i = index[name]
        switch, position = f"{SWITCHES}_{i}", f"{SWITCHES}_{i}_index"
        if not any(n.output[0] == switch for n in added):
            graph.initializer.append(onnx.numpy_helper.from_array(np.array(i, np.int64), position))
            added.append(onnx.helper.make_node("Gather", [SWITCHES, position], [switch]))
        added.append(onnx.helper.make_node("Where", [switch, value, f"{dequantized}_simulated"], [dequantized]))
        return f"{dequantized}_simulated"

    quantizers = [(name, q) for name, nodes in _activations(graph).items() for q in nodes]
    switched_by = {q.output[0]: name for name, q in quantizers}
    quantizes = {q.output[0]: q.input[0] for _, q in quantizers}
    weights = {dq.output[0]: name for name, dq in _weights(graph, source.floats).items()}
    clamped = {}                                   # quantized tensor -> its float value, the dropped clamp put back
    for node in list(graph.node):
        activation = switched_by.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        weight = weights.get(node.output[0])
        if activation in index:
            tensor = quantizes[node.input[0]]
            if tensor not in clamped:
                clamp = source.clamp(graph, tensor, tensor, f"{tensor}_float")
                added.extend([clamp] if clamp is not None else [])
                clamped[tensor] = tensor if clamp is None else f"{tensor}_float"
            node.output[0] = bypass(activation, node.output[0], clamped[tensor])
        elif weight in index:
            graph.initializer.append(onnx.numpy_helper.from_array(source.floats[weight], f"{weight}_float"))
            node.output[0] = bypass(weight, node.output[0], f"{weight}_float")
    graph.node.extend(added)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    order = [o.name for o in session.get_outputs()]

    def run(feeds: dict, mask: np.ndarray) -> list[np.ndarray]:
        return session.run(order, {**feeds, SWITCHES: np.asarray(mask, dtype=bool)})
    return run


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


@dataclass(frozen=True)
class _Source:
    """What the quantizer saw (`source` after the same pre-processing): the float initializers, and the Relu and
    Clip nodes by output tensor (a Relu or Clip before a Q/DQ is dropped from the quantized graph: the Q/DQ's range
    clamps as it did, and reverting the Q/DQ must put it back)."""
    floats: dict[str, np.ndarray]
    clamps: dict[str, object]

    def clamp(self, graph, tensor: str, before: str, after: str):
        """The Relu or Clip the quantizer dropped in front of the quantized `tensor`, as a node from `before` to
        `after` (the Clip's bounds added to `graph`), or None when it dropped none."""
        import onnx

        node = self.clamps.get(tensor)
        if node is None or any(n.op_type == node.op_type and tensor in n.output for n in graph.node):
            return None
        known = {t.name for t in graph.initializer}
        graph.initializer.extend(onnx.numpy_helper.from_array(self.floats[name], name) for name in node.input[1:]
                                 if name and name not in known)
        return onnx.helper.make_node(node.op_type, [before, *node.input[1:]], [after], name=f"{node.name}_reverted")


def _source(source: Path) -> _Source:
    stat = source.stat()
    return _prepared(str(source), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _prepared(source: str, mtime_ns: int, size: int) -> _Source:
    """`_source`, read once per model file (each trial of the search reverts some)."""
    import onnx

    from edgeml.compress.quantize.onnxruntime_backend import prepare

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        prepare(Path(source), prepared)
        graph = onnx.load(str(prepared)).graph
        floats = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer
                  if t.data_type == onnx.TensorProto.FLOAT}
        return _Source(floats, {n.output[0]: n for n in graph.node if n.op_type in ("Relu", "Clip")})


def _activation(q, producer: dict, outputs: set[str], graph) -> str:
    """In words, what the QuantizeLinear `q` quantizes: a model input, a model output, or an op's output."""
    tensor = q.input[0]
    if tensor in {i.name for i in graph.input}:
        return f"input '{tensor}'"
    dequantized = [n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]
    made_by = producer.get(tensor)
    if any(o in outputs for o in dequantized):
        return f"output '{next(o for o in dequantized if o in outputs)}'"
    return f"output of {made_by.op_type} '{made_by.name}'" if made_by is not None else f"'{tensor}'"


def _fold_float_nodes(graph, floats: dict[str, np.ndarray]) -> None:
    """Replace the constant DequantizeLinears that only nodes computing in float read with float initializers: the
    float weight or bias from `floats` (a bias is quantized with its input's and weight's scales; a wide input range
    rounds it away), else the dequantized value. A node computes in float when an input is neither dequantized nor
    constant, or an output is not quantized again: ONNX Runtime fuses a node into an INT8 kernel only between Q/DQ."""
    import onnx

    constants = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    constant_dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants}
    requantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}

    def floating(node) -> bool:
        return node.op_type not in ("QuantizeLinear", "DequantizeLinear") and (any(
            name and name not in constants and getattr(producer.get(name), "op_type", "") != "DequantizeLinear"
            for name in node.input) or any(name not in requantized for name in node.output))
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name in constant_dq:
                readers.setdefault(name, []).append(node)
    for name, nodes in readers.items():
        if all(floating(n) for n in nodes):
            dq = constant_dq[name]
            graph.node.remove(dq)
            value = floats.get(dq.input[0].removesuffix("_quantized"))
            graph.initializer.append(onnx.numpy_helper.from_array(
                value if value is not None else _dequantized(dq, constants), name))


def _dequantized(dq, constants: dict) -> np.ndarray:
    """What the constant DequantizeLinear `dq` computes: (q - zero point) * scale, per channel along its axis."""
    import onnx

    q = onnx.numpy_helper.to_array(constants[dq.input[0]]).astype(np.float32)
    scale = onnx.numpy_helper.to_array(constants[dq.input[1]]).astype(np.float32)
    zero = onnx.numpy_helper.to_array(constants[dq.input[2]]).astype(np.float32) if len(dq.input) > 2 and \
        dq.input[2] else np.zeros_like(scale)
    if scale.ndim == 1 and q.ndim > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % q.ndim
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def _drop_unused_initializers(graph) -> None:
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
