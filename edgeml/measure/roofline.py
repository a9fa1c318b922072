"""Roofline latency prediction: what a model should take on a device, from its ONNX graph and the
device's profile, without running it there.

Every layer costs its MACs (Conv, ConvTranspose, Gemm, MatMul, attention ops; 0 for the rest) and
the bytes it moves (weights plus input and output activations). Its time is

    max(2 x MACs / (peak x efficiency.compute), bytes / (bandwidth x efficiency.memory))
      + efficiency.layer_overhead_us

and the model's time is the sum over layers, at batch 1. Views that move no data (Reshape, Flatten,
Squeeze, ...) and layers whose inputs are all constant (folded by the runtime) cost nothing.
The efficiency factors come from the profile (fitted on measurements where the profile says so,
benchmarks/roofline.py). `measure_host` gives this machine's own roofline with factors of 1: the
peaks its GEMM kernels and memory copies reach, the floor of what this CPU can do (only roughly:
the memory term charges DRAM bandwidth for data that may sit in cache).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeml.measure import cpu_features
from edgeml.profiles import Profile, ProfileError

ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}
# Quantized precisions move 1-byte tensors through the compute layers only; the rest of the graph
# (pooling, activations, normalization) runs in float32, as it does in a QDQ model.
QUANTIZED = ("int8", "fp8")
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "MultiHeadAttention")
VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Shape", "Size", "Constant")


@dataclass(frozen=True)
class Cost:
    """One layer's work, independent of the device."""
    name: str
    op: str
    macs: int
    bytes: int


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    macs: int
    bytes: int
    ms: float
    bound: str                  # compute | memory


@dataclass
class Prediction:
    ms: float
    profile: str
    precision: str
    threads: int | None
    macs: int
    bytes: int
    layers: list[Layer]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def predict(onnx_path: Path, profile: Profile, precision: str, threads: int | None = None) -> Prediction:
    """Batch-1 latency of the ONNX model on the profile's device at `precision` (ProfileError: no such path)."""
    notes = []
    if "+" in precision:           # mixed precision, e.g. int8+fp32: most layers in the first one
        base = precision.split("+")[0]
        notes.append(f"{precision} predicted as {base}: the layers kept in float are not modelled")
        precision = base
    peak = profile.peak(precision, threads)
    if peak is None or precision not in ELEMENT_BYTES:
        raise ProfileError(f"{profile.display_name} has no {precision} compute path (it computes in "
                           f"{', '.join(profile.precisions)}): no roofline prediction at {precision}")
    eff = profile.efficiency
    compute_rate = peak * eff.get("compute", 1.0)
    memory_rate = profile.bandwidth(threads) * eff.get("memory", 1.0)
    overhead_ms = eff.get("layer_overhead_us", 0.0) / 1e3
    cores = profile.cores_used(threads)
    if cores is not None:
        notes.append(f"{threads} thread(s) on {cores} of the device's {profile.cpu['cores']} cores")
    if eff.get("basis") == "assumed":
        notes.append(f"{profile.name}'s efficiency factors are assumptions, not fitted on measurements")
    if precision in QUANTIZED:
        notes.append(f"{precision}: 1-byte weights and activations in compute layers, float32 elsewhere")

    costs, unknown = layer_costs(Path(onnx_path), precision)
    if unknown:
        notes.append(f"{unknown} layer(s) have tensors of unknown shape, counted as moving no data")
    layers = []
    for c in costs:
        compute_ms = 2 * c.macs / compute_rate * 1e3
        memory_ms = c.bytes / memory_rate * 1e3
        layers.append(Layer(c.name, c.op, c.macs, c.bytes, max(compute_ms, memory_ms) + overhead_ms,
                            "compute" if compute_ms >= memory_ms else "memory"))
    return Prediction(sum(x.ms for x in layers), profile.name, precision, threads,
                      sum(c.macs for c in costs), sum(c.bytes for c in costs), layers, notes)


def layer_costs(onnx_path: Path, precision: str) -> tuple[list[Cost], int]:
    """Per-layer MACs and bytes at `precision`, and how many layers had a tensor of unknown shape."""
    stat = onnx_path.stat()
    costs, unknown = _layer_costs(str(onnx_path), stat.st_mtime_ns, stat.st_size, precision)
    return list(costs), unknown


@functools.lru_cache(maxsize=8)
def _layer_costs(path: str, mtime_ns: int, size: int, precision: str) -> tuple[tuple[Cost, ...], int]:
    graph = _inferred_graph(path)
    tensors = {v.name: v.type.tensor_type for v in (*graph.input, *graph.value_info, *graph.output)}
    shapes = {name: _dims(t.shape) for name, t in tensors.items() if t.HasField("shape")}
    dtypes = {name: t.elem_type for name, t in tensors.items()}
    constant = set()
    for t in graph.initializer:
        shapes[t.name], dtypes[t.name] = tuple(t.dims), t.data_type
        constant.add(t.name)

    costs, unknown = [], 0
    for i, node in enumerate(graph.node):
        inputs = [n for n in node.input if n]
        folded = all(n in constant for n in inputs)      # computed once, when the runtime loads the model
        if folded:
            constant.update(node.output)
        if folded or node.op_type in VIEW_OPS:
            continue
        names = inputs + [n for n in node.output if n]
        if any(n not in shapes for n in names):
            unknown += 1
        in_float = precision in QUANTIZED and node.op_type not in COMPUTE_OPS
        float_bytes = 4 if in_float else ELEMENT_BYTES[precision]
        moved = sum(_numel(shapes[n]) * _element_bytes(dtypes.get(n), float_bytes) for n in names if n in shapes)
        costs.append(Cost(node.name or f"{node.op_type}_{i}", node.op_type, _macs(node, shapes), moved))
    return tuple(costs), unknown


def _inferred_graph(path: str):
    """The graph with every tensor's shape inferred, its dynamic dimensions (batch, ..., and -1, which PaddlePaddle
    writes for any size) set to 1."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name not in initializers:
            for dim in value.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value") or dim.dim_value <= 0:
                    dim.dim_value = 1
    del graph.value_info[:]                     # exporters' symbolic shapes would override the 1s
    for value in graph.output:
        value.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(model, data_prop=True).graph


def _dims(shape) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in shape.dim)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _element_bytes(elem_type: int | None, float_bytes: int) -> int:
    """Float tensors take the precision's size; integer and bool tensors (ids, masks) their own."""
    import onnx

    if elem_type in (None, onnx.TensorProto.UNDEFINED):
        return float_bytes
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    return float_bytes if np.issubdtype(dtype, np.floating) else dtype.itemsize


def _macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    def shape(i: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    attrs = {a.name: a for a in node.attribute}
    op = node.op_type
    if op == "Conv":                     # every output element: C/groups x kernel MACs (weight [M, C/g, k...])
        out, w = shape(0, outputs=True), shape(1)
        return _numel(out) * _numel(w[1:]) if out and w else 0
    if op == "ConvTranspose":            # every input element: M/groups x kernel MACs (weight [C, M/g, k...])
        x, w = shape(0), shape(1)
        return _numel(x) * _numel(w[1:]) if x and w else 0
    if op in ("Gemm", "MatMul"):
        a, out = shape(0), shape(0, outputs=True)
        if not a or out is None:
            return 0
        trans_a = op == "Gemm" and "transA" in attrs and attrs["transA"].i
        return _numel(out) * (a[0] if trans_a else a[-1])
    if op == "Attention" and node.domain == "com.microsoft":   # packed QKV projection + attention
        x, w = shape(0), shape(1)
        if not x or not w or len(x) != 3:
            return 0
        batch, seq, hidden = x
        return batch * seq * hidden * w[1] + batch * seq * seq * 2 * (w[1] // 3)
    if op in ("Attention", "MultiHeadAttention"):
        q, k, v = shape(0), shape(1), shape(2)
        if not q or not k or not v:
            return 0
        (batch, sq, eq), (_, skv, _), (_, _, ev) = (_seq_width(s) for s in (q, k, v))
        return batch * sq * skv * (eq + ev)     # Q.K^T and weights.V over all heads
    return 0


def _seq_width(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(batch, sequence, width over all heads) of a [B, S, H*D] or [B, H, S, D] attention input."""
    if len(shape) == 4:
        return shape[0], shape[2], shape[1] * shape[3]
    return shape[0], shape[1], shape[-1]


def measure_host(threads: int, size: int = 1024, copy_mb: int = 256, repeats: int = 5) -> Profile:
    """This machine's roofline at `threads` threads, measured: GEMM throughput per precision
    (the best of ONNX Runtime and PyTorch on a `size` x `size` matmul, best of `repeats`) and
    memory bandwidth (bytes read + written copying a `copy_mb` MB array). Efficiency factors are 1
    and there is no per-layer overhead: this CPU's roofline floor."""
    import onnx
    import onnxruntime
    import torch

    from edgeml.measure.machine import cpu_model

    rng = np.random.default_rng(0)
    a32, b32 = rng.standard_normal((2, size, size), dtype=np.float32)
    a8 = rng.integers(-128, 128, (size, size), dtype=np.int8)
    b8 = rng.integers(-128, 128, (size, size), dtype=np.int8)
    u8 = rng.integers(0, 256, (size, size), dtype=np.uint8)      # ONNX Runtime's fast pairing is u8 x s8
    gemm_ops = 2 * size**3
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds = {"fp32": min(_ort_seconds("MatMul", a32, b32, threads, repeats),
                               _best_seconds(lambda: torch.from_numpy(a32) @ torch.from_numpy(b32), repeats))}
        int8 = [_ort_seconds("MatMulInteger", u8, b8, threads, repeats)]
        try:
            int8.append(_best_seconds(lambda: torch._int_mm(torch.from_numpy(a8), torch.from_numpy(b8)), repeats))
        except RuntimeError:       # no int8 GEMM kernel in this torch build
            pass
        seconds["int8"] = min(int8)
        if cpu_features.has_bf16():       # else a bf16 GEMM is emulated, not a peak
            a16, b16 = torch.from_numpy(a32).bfloat16(), torch.from_numpy(b32).bfloat16()
            seconds["bf16"] = _best_seconds(lambda: a16 @ b16, repeats)
        src = torch.ones(copy_mb * 2**20 // 4)
        dst = torch.empty_like(src)
        bandwidth = 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), repeats)
    finally:
        torch.set_num_threads(previous)
    peaks = {p: gemm_ops / s / 1e9 for p, s in seconds.items()}
    machine = platform.machine()
    return Profile(
        name="host", display_name=f"this machine ({cpu_model()})", target="cpu",
        cpu={"model": cpu_model(), "arch": "arm64" if machine in ("aarch64", "arm64") else machine,
             "cores": os.cpu_count() or 1},
        gpu=None, runtimes={"onnxruntime": onnxruntime.__version__, "torch": torch.__version__.split("+")[0],
                            "onnx": onnx.__version__},
        precisions=tuple(peaks), dla_cores=0, peak_gops=peaks, memory_bandwidth_gbs=bandwidth / 1e9,
        memory_gb=_memory_gb(),
        efficiency={"compute": 1.0, "memory": 1.0, "layer_overhead_us": 0.0, "basis": "measured"},
        sources=(f"edgeml.measure.roofline.measure_host(threads={threads}, size={size}, copy_mb={copy_mb})",))


def _best_seconds(run, repeats: int) -> float:
    """Seconds per call of `run`, the best of `repeats` after one warm-up call."""
    run()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _ort_seconds(op: str, a: np.ndarray, b: np.ndarray, threads: int, repeats: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import helper

    def value(name, array):
        return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)

    out_type = onnx.TensorProto.INT32 if op == "MatMulInteger" else onnx.TensorProto.FLOAT
    out = helper.make_tensor_value_info("C", out_type, None)
    graph = helper.make_graph([helper.make_node(op, ["A", "B"], ["C"])], "gemm", [value("A", a), value("B", b)], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return _best_seconds(lambda: session.run(None, {"A": a, "B": b}), repeats)


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 0.0
