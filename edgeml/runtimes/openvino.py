"""Converting ONNX models to OpenVINO IR and running them on the CPU plugin.

When ov.convert_model fails, the error names the ops it could not convert (OpenVINO's message lists them, its
first line only says where in OpenVINO it gave up), and the conversion is tried once more on a simplified graph:
ONNX Runtime's basic graph optimizations (constant folding: a subgraph of ops OpenVINO lacks that reads only
constants becomes a constant) with the input shapes made static, so that shape subgraphs fold too.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.runtimes.base import Artifact, Backend

# Without the f32 hint, OpenVINO runs "f32" models in bf16 on CPUs with AMX/AVX512-BF16, which
# would make the FP32 row quietly lower precision than the original it is compared with. The BF16
# candidate asks for bf16 on purpose, with the same FP32 IR, on CPUs that edgeml.measure.cpu_features says
# have BF16 instructions (without them OpenVINO emulates bf16, slower than f32).
RUNTIME_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


class OpenVinoRunner:
    def __init__(self, model: Path, threads: int, config: dict):
        import openvino as ov

        compiled = ov.Core().compile_model(str(model), "CPU", {**config, "INFERENCE_NUM_THREADS": threads})
        self.request = compiled.create_infer_request()
        self.names = [port.get_any_name() for port in compiled.inputs]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer({name: feeds[name] for name in self.names})
        return [np.asarray(v) for v in result.to_tuple()]


def open_artifact(artifact: Artifact, threads: int) -> OpenVinoRunner:
    return OpenVinoRunner(artifact.folder / artifact.entry, threads, artifact.runtime_config)


def save_ir(model, folder: Path, precision: str, hint: str = "f32") -> Artifact:
    """Save an openvino.Model as IR (model.xml + model.bin), weights kept as they are; the runner
    compiles it with the inference precision `hint` (f32 | bf16)."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return Artifact("openvino", precision, folder, "model.xml", {**RUNTIME_CONFIG, "INFERENCE_PRECISION_HINT": hint})


def read_onnx(onnx_path: Path, shapes: dict[str, tuple[int, ...]] | None = None):
    """The ONNX model as an openvino.Model after OpenVINO's conversion passes (ov.convert_model): shape subgraphs
    folded, activations fused (HSwish ...). Core.read_model skips them, and NNCF then quantizes the unfused ops
    (Maximum, Divide ...) too: on PP-OCR's detector, 166 FakeQuantize ops against 101 and INT8 30% slower.
    See `convert_onnx` for `shapes` and what happens when the conversion fails."""
    return convert_onnx(onnx_path, shapes).model


class ConversionError(RuntimeError):
    """OpenVINO cannot convert the ONNX model, as it is or simplified; the message names the ops."""


@dataclass(frozen=True)
class Converted:
    model: Any                       # openvino.Model
    notes: tuple[str, ...] = ()      # one line, when only the simplified graph converted


def convert_onnx(onnx_path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> Converted:
    """`read_onnx`, and a note when the model converted only once simplified (see the module's docstring). The
    simplified graph's free input dimensions take their size from `shapes` (one sample as the model takes it, e.g.
    from the calibration data), else 1; the converted model gets them back free where OpenVINO can reshape it.
    Raises ConversionError naming the ops OpenVINO could not convert."""
    import openvino as ov

    try:
        return Converted(ov.convert_model(str(onnx_path)))
    except Exception as e:          # OpConversionFailure, RuntimeError from a conversion pass, ...
        failed = unconverted(e)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fixed = _simplified(onnx_path, Path(tmp) / "simplified.onnx", shapes or {})
            model = ov.convert_model(str(Path(tmp) / "simplified.onnx"), share_weights=False)   # the file goes
        except Exception as e:
            why = re.sub(r"Load model from \S+ failed: ?", "", unconverted(e))     # the temporary file's path
            raise ConversionError(f"OpenVINO cannot convert {failed} (nor after ONNX Runtime's constant folding "
                                  f"with static input shapes: {why})") from None
    return Converted(model, (f"ov.convert_model failed on {failed}; converted after ONNX Runtime's constant "
                             f"folding with static input shapes ({_free_again(model, fixed)})",))


def unconverted(error: BaseException) -> str:
    """The ops OpenVINO's conversion `error` names, in one line: the ops without a conversion rule, those whose
    conversion failed (with the node and the last line of why), or the node a conversion pass stopped at; else
    the message's first line."""
    text = str(error)
    found = [f"{op} (no conversion rule)" for listed in re.findall(r"No conversion rule found for operations: (.+)",
                                                                    text) for op in listed.split(", ")]
    found += [_failed_op(op, text) for listed in re.findall(r"Conversion is failed for: (.+)", text)
              for op in listed.split(", ")]
    if not found:        # a conversion pass or a node's validation: "node: opset1::Negative y (...)"
        stopped = re.search(r"node:? '?(\w+::\w+) ([^\s(']+)", text)
        found = [f"{stopped.group(1)} {stopped.group(2)} ({_last_line(text)})"] if stopped else []
    return ", ".join(found) or f"the model ({type(error).__name__}: {_first_line(text)})"


def _failed_op(op: str, text: str) -> str:
    """`op` (as OpenVINO's summary names it: Reshape-17) with its node and the last line of its detailed log."""
    detail = re.search(rf"-- {re.escape(op)} with a message:\n(.*?)(?:\n-- |\nSummary:)", text, re.S)
    if detail is None:
        return op
    node = re.search(r"<Node\(\w+\): ([^>]*)>", detail.group(1))
    return f"{op} ({f'node {node.group(1)}: ' if node else ''}{_last_line(detail.group(1))})"


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")[:160]


def _simplified(model: Path, out: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, list[int | None]]:
    """`model` with static input shapes (free dimensions from `shapes`, else 1) after ONNX Runtime's basic graph
    optimizations, written to `out`; each input's dimensions as the model gave them (None: free)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed

    proto = onnx.load(str(model))
    constants = {t.name for t in proto.graph.initializer}
    given = {}
    for value in proto.graph.input:
        if value.name in constants:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in value.type.tensor_type.shape.dim]
        sample = shapes.get(value.name, ())
        size = [d if d is not None else (sample[i] if len(sample) == len(dims) else 1) for i, d in enumerate(dims)]
        make_input_shape_fixed(proto.graph, value.name, size)
        given[value.name] = dims
    static, large = out.with_name("static.onnx"), proto.ByteSize() > 2**31 - 2**20     # over protobuf's 2 GB
    onnx.save(proto, str(static), save_as_external_data=large, location="static.onnx.data")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    if large:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         f"{out.name}.data")
    ort.InferenceSession(str(static), options, providers=["CPUExecutionProvider"])
    return given


def _free_again(model, given: dict[str, list[int | None]]) -> str:
    """Give the converted `model`'s inputs back the dimensions the ONNX model left free; says what it did."""
    import openvino as ov

    shapes = {}
    for port in model.inputs:
        dims = next((given[n] for n in port.get_names() if n in given), None)
        if dims is not None and None in dims:
            static = port.get_partial_shape()
            shapes[port] = ov.PartialShape([ov.Dimension() if d is None else static[i] for i, d in enumerate(dims)])
    if not shapes:
        return "its inputs have static shapes in the ONNX model too"
    try:
        model.reshape(shapes)
    except Exception as e:
        return f"its inputs keep the static shapes: OpenVINO cannot make them dynamic again ({_first_line(str(e))})"
    return "the input dimensions the ONNX model leaves free are free again"


OPENVINO = Backend("openvino", ("openvino",), extra="edgeml[cpu]", open=open_artifact)
