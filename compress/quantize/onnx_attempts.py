"""Quantizer builds that check every graph rewrite and fall back when one breaks the graph.

An attempt is an ordered list of steps, each writing a new model file from the previous one (shape inference,
ONNX Runtime's graph optimization, an opset conversion, the quantizer itself). After every step its output is
checked: `onnx.checker` with full shape inference on the saved file (external data and >2 GB models work), then
an ONNX Runtime CPU session. The first attempt whose steps all pass wins; each earlier one is recorded with the
step that broke and why, one line each. Attempts that start with the same steps share their outputs, so a
prefix runs once.

onnxruntime's `quant_pre_process` runs the same pre-processing as one call. It is split here because on real
exports each part failed on its own: symbolic shape inference gives up on graphs whose dynamic dimensions it
cannot merge (PaddlePaddle's OCR models, a BERT or an LSTM with two dynamic lengths) and then writes
`sym_shape_infer_temp.onnx` and a `<uuid>.data` into the current folder; the fallback without it loses a model's
external data; and models older than opset 13 (PaddlePaddle exports at opset 9-12) came out of the quantizer
with per-channel Q/DQ (`axis`, opset 13) in an older graph, which ONNX Runtime rejects (INVALID_GRAPH on the
`ConvBnFusion_*` tensors of the Conv+BatchNormalization fusion): they are converted with
`onnx.version_converter` first.

The quantizer runs ONNX shape inference itself, so a graph whose shapes cannot be inferred from its free input
dimensions fails every pre-processing. When the caller gives one sample's input shapes, a last attempt fixes the
free input dimensions to them for shape inference and the quantizer, then gives the quantized graph its inputs'
and outputs' shapes back and drops the inferred intermediate shapes (their sizes were the sample's): the model
still runs at any batch. It skips ONNX Runtime's graph optimization, which would fold the sample's sizes into
constants.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from edgeml.errors import first_line

# Q/DQ with a per-channel `axis` and ONNX Runtime's quantized kernels need opset 13; older graphs are converted.
QUANTIZER_OPSET = 13


@dataclass(frozen=True)
class Step:
    name: str                                # in words, for the notes
    apply: Callable[[Path, Path], None]      # (model in, model out): writes the output model file


@dataclass(frozen=True)
class Attempt:
    name: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Outcome:
    model: Path                              # the checked output of the winning attempt
    attempt: str
    notes: tuple[str, ...]                   # one line per attempt tried, the winner last


class AttemptsFailed(Exception):
    """No attempt gave a model that passes the checks; the message names each failure."""


def first_working(model: Path, attempts: Sequence[Attempt], work: Path) -> Outcome:
    """Run `attempts` in order on `model`, their files in `work`, until one yields a checked model."""
    from edgeml.time_limit import TimeLimit

    work = work.resolve()
    source = work / "source.onnx"
    save(load(model), source)
    rejected = _checker_error(source)
    notes = [] if rejected is None else [f"the model as given fails onnx.checker ({rejected}): steps are checked "
                                         "by loading them in ONNX Runtime only"]
    done: dict[tuple[str, ...], Path | str] = {(): source}     # steps run so far -> their output, or why it broke
    for attempt in attempts:
        current, failure = source, None
        for k, step in enumerate(attempt.steps):
            key = tuple(s.name for s in attempt.steps[:k + 1])
            if key in done:
                failure = f"{step.name}, as above" if isinstance(done[key], str) else None
            else:
                out = work / f"step{len(done)}.onnx"
                try:
                    with inside(work):
                        step.apply(current, out)
                    check(out, strict=rejected is None)
                    done[key] = out
                except (TimeLimit, MemoryError):
                    raise
                except Exception as e:
                    done[key] = failure = f"{step.name}: {describe(e)}"
            if failure is not None:
                break
            current = done[key]
        if failure is None:
            return Outcome(current, attempt.name, (*notes, f"{attempt.name}: ok"))
        notes.append(f"{attempt.name}: failed at {failure}")
    raise AttemptsFailed(f"no attempt gave a valid model; the last, {notes[-1]}\n" + "\n".join(notes))


def check(path: Path, strict: bool = True) -> None:
    """The model at `path` is valid ONNX (full shape inference; unless not `strict`) and ONNX Runtime loads it."""
    import onnx
    import onnxruntime as ort

    if strict:
        onnx.checker.check_model(str(path), full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _checker_error(path: Path) -> str | None:
    """Why onnx.checker rejects the model at `path`, or None."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        return describe(e)
    return None


# Python's own error types, which a library raises from a bug or an unexpected input: where matters as much as what.
_LOCATED = (AssertionError, AttributeError, IndexError, KeyError, TypeError, ValueError, ZeroDivisionError)


def describe(e: Exception) -> str:
    """One line: the error's type and first line, and where it was raised for Python's own error types (a bare
    assert, a numpy truth-value error deep in a library)."""
    text = f"{type(e).__name__}: {first_line(e, 300)}" if str(e).strip() else type(e).__name__
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f"{os.sep}numpy{os.sep}" not in f.filename]
    if isinstance(e, _LOCATED) and frames:       # the caller's line, not numpy's own
        text += f" in {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].name})"
    return text


def opset(model: Path) -> int:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def preprocessing(model_opset: int, quantize: Step | None = None, min_opset: int = QUANTIZER_OPSET,
                  shapes: dict[str, tuple[int, ...]] | None = None, source: Path | None = None) -> list[Attempt]:
    """The attempts, in order, each ending with `quantize` when given: onnxruntime's full pre-processing, then
    without its graph optimization, without its symbolic shape inference, without any pre-processing, then (with
    `quantize`, one sample's input `shapes` and the `source` model) with those static input shapes; at the
    model's own opset when the quantizer can work there (`min_opset`), then after converting to
    QUANTIZER_OPSET when the model is older."""
    variants = [("full pre-processing", (SYMBOLIC, OPTIMIZE, SHAPES, NAMES), ()),
                ("without graph optimization", (SYMBOLIC, SHAPES, NAMES), ()),
                ("without symbolic shape inference", (OPTIMIZE, SHAPES, NAMES), ()),
                ("without pre-processing", (NAMES,), ())]
    if quantize is not None and shapes and source is not None:
        variants.append(("static input shapes", (static_shapes(shapes), SHAPES, NAMES), (free_shapes(source),)))
    tail = (quantize,) if quantize is not None else ()
    attempts = []
    if model_opset >= min_opset:
        attempts += [Attempt(f"opset {model_opset}, {name}", (*steps, *tail, *after))
                     for name, steps, after in variants]
    if model_opset < QUANTIZER_OPSET:
        upgrade = Step(f"opset {model_opset} -> {QUANTIZER_OPSET} conversion", convert_opset(QUANTIZER_OPSET))
        attempts += [Attempt(f"opset {model_opset} -> {QUANTIZER_OPSET}, {name}", (upgrade, *steps, *tail, *after))
                     for name, steps, after in variants]
    return attempts


def convert_opset(version: int) -> Callable[[Path, Path], None]:
    def apply(model: Path, out: Path) -> None:
        import onnx

        save(onnx.version_converter.convert_version(load(model), version), out)
    return apply


def _symbolic_shapes(model: Path, out: Path) -> None:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(load(model))
    if inferred is None:
        raise ValueError("symbolic shape inference supports opset 7 and above only")
    save(inferred, out)


def _optimize(model: Path, out: Path) -> None:
    """ONNX Runtime's basic graph optimizations (constant folding, Conv+BN and other fusions), written out."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    if has_external_data(model):
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         f"{out.name}.data")
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _onnx_shapes(model: Path, out: Path) -> None:
    """ONNX shape inference (on the file: models over 2 GB work), marked as pre-processed for the quantizer."""
    import onnx
    from onnxruntime.quantization.quant_utils import add_pre_process_metadata

    onnx.shape_inference.infer_shapes_path(str(model), str(out))
    inferred = load(out)
    add_pre_process_metadata(inferred)
    save(inferred, out)


def static_shapes(shapes: dict[str, tuple[int, ...]]) -> Step:
    """The graph inputs' free dimensions fixed to `shapes` (one sample's input shapes), throughout the graph."""
    def apply(model: Path, out: Path) -> None:
        from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed

        proto = load(model)
        for value in proto.graph.input:
            dims = value.type.tensor_type.shape.dim
            if value.name in shapes and len(shapes[value.name]) == len(dims):
                make_input_shape_fixed(proto.graph, value.name, [d.dim_value if d.dim_value > 0 else size
                                                                 for d, size in zip(dims, shapes[value.name])])
        save(proto, out)
    return Step("static input shapes", apply)


def free_shapes(source: Path) -> Step:
    """The graph inputs' and outputs' shapes as `source` declares them, and no intermediate shapes: undoes
    `static_shapes` on a quantized graph (its nodes do not depend on the sizes)."""
    def apply(model: Path, out: Path) -> None:
        import onnx

        declared = onnx.load(str(source), load_external_data=False).graph
        types = {v.name: v.type for v in (*declared.input, *declared.output)}
        proto = load(model)
        for value in (*proto.graph.input, *proto.graph.output):
            if value.name in types:
                value.type.CopyFrom(types[value.name])
        del proto.graph.value_info[:]
        save(proto, out)
    return Step("input shapes free again", apply)


def _name_nodes(model: Path, out: Path) -> None:
    """Every node named: an unnamed one after its op and first output (unique in a graph). The accuracy search keeps
    nodes in float by name, and pre-processing leaves nodes unnamed (HardSwish inlined as HardSigmoid and Mul: a
    text recognizer kept 84 quantized tensors with all of its named nodes in float)."""
    proto = load(model)
    taken = {node.name for node in proto.graph.node}
    for node in proto.graph.node:
        if not node.name:
            name = f"{node.op_type}_{node.output[0]}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    save(proto, out)


SYMBOLIC = Step("symbolic shape inference", _symbolic_shapes)
OPTIMIZE = Step("ONNX Runtime graph optimization", _optimize)
SHAPES = Step("ONNX shape inference", _onnx_shapes)
NAMES = Step("node names", _name_nodes)


def load(model: Path):
    """The model with its external data."""
    import onnx

    return onnx.load(str(model))


def save(proto, path: Path) -> None:
    """Inline, or with its tensors in `<name>.data` beside it when over protobuf's 2 GB."""
    import onnx

    try:
        onnx.save(proto, str(path))
    except ValueError:      # "The proto size is larger than the 2 GB limit"
        onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data")


def has_external_data(model: Path) -> bool:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def copy(model: Path, out: Path) -> None:
    """`model` (with its external data) as a self-contained file at `out`."""
    save(load(model), out)


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """The process's current folder set to `folder` for the block: onnxruntime's quantization tools write
    some files (symbolic shape inference's `sym_shape_infer_temp.onnx`) to the current folder."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def quantized(model: Path, output: Path, quantizers: Sequence[Step], min_opset: int,
              shapes: dict[str, tuple[int, ...]] | None = None) -> Outcome:
    """The first of `quantizers` (a quantizer, then its fallbacks) after the first pre-processing with which it
    gives a valid model, written to `output` (scratch files in a temporary folder beside it). With `shapes` (one
    sample's input shapes, as the model takes it), the last pre-processing makes the input shapes static."""
    tried = [Attempt(f"{a.name}, {q.name}" if len(quantizers) > 1 else a.name, a.steps)
             for q in quantizers for a in preprocessing(opset(model), q, min_opset, shapes, model.resolve())]
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        outcome = first_working(model, tried, Path(tmp))
        copy(outcome.model, output)
    return replace(outcome, model=output)


def prepared(model: Path, output: Path, min_opset: int = QUANTIZER_OPSET) -> Outcome:
    """The first pre-processing of `preprocessing` whose every step gives a valid graph, written to `output`."""
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        outcome = first_working(model, preprocessing(opset(model), None, min_opset), Path(tmp))
        copy(outcome.model, output)
    return replace(outcome, model=output)
