"""PyTorch -> ONNX export, and the parity check of the export against PyTorch.

torch.onnx.export's dynamo exporter is tried first; when it fails, the legacy TorchScript
exporter is used and the reason is recorded. The leading dimension is exported as a symbolic
batch size. The dynamo exporter records each node's Python stack trace (file paths of this machine) in
the model: it is dropped, so that an export, and every build and bundle made from it, is the same
wherever the model's code and torch are installed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeml.errors import ExportError, first_line
from edgeml.inputs.models import SourceModel

OPSET = 18
STACK_TRACE = "pkg.torch.onnx.stack_trace"     # node metadata the dynamo exporter writes


@dataclass
class Export:
    path: Path
    exporter: str                      # dynamo | legacy
    output_names: list[str]
    notes: list[str] = field(default_factory=list)


def export_onnx(source: SourceModel, path: Path, example: dict[str, np.ndarray]) -> Export:
    """Export `source.module` to `path`; `example` holds at least two samples per input."""
    import torch

    names = [s.name for s in source.inputs]
    args = tuple(torch.from_numpy(example[n]) for n in names)
    with torch.inference_mode():
        out = source.callable(*args)
    outputs = out if isinstance(out, (tuple, list)) else [out]
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        raise ExportError("the model must return a tensor or a tuple/list of tensors")
    output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]

    batch = torch.export.Dim("batch")
    attempts = {
        "dynamo": dict(dynamo=True, dynamic_shapes=tuple(None if s.batch_axis is None else {s.batch_axis: batch}
                                                         for s in source.inputs),
                       optimize=True, verbose=False),
        "legacy": dict(dynamo=False, dynamic_axes={**{s.name: {s.batch_axis: "batch"} for s in source.inputs
                                                      if s.batch_axis is not None},
                                                   **{n: {0: "batch"} for n in output_names}},
                       opset_version=OPSET),
    }
    if source.kind == "exported_program":
        attempts["dynamo"].pop("dynamic_shapes")      # the program carries its own shapes
        attempts["legacy"]["dynamic_axes"] = None
    if source.kind == "torchscript":
        del attempts["dynamo"]                         # torch.export cannot trace TorchScript
    failures = []
    for exporter, kwargs in attempts.items():
        # The dynamo exporter takes an ExportedProgram as it is; the legacy one needs a module.
        target = source.module if exporter == "dynamo" else source.callable
        try:
            with _quiet():
                torch.onnx.export(target, args, str(path), input_names=names,
                                  output_names=output_names, **kwargs)
            _drop_stack_traces(path)
            notes = [f"the dynamo exporter failed ({failures[0]}); used the legacy exporter"] if failures else []
            return Export(path, exporter, output_names, notes)
        except Exception as e:
            failures.append(_root_cause(e))
    raise ExportError("cannot export the model to ONNX: " + "; ".join(
        f"{name} exporter: {why}" for name, why in zip(attempts, failures)))


def _drop_stack_traces(path: Path) -> None:
    """Remove STACK_TRACE from every node's metadata (subgraphs and functions included); external data stays."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def clean(nodes) -> None:
        for node in nodes:
            kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
            if len(kept) != len(node.metadata_props):
                del node.metadata_props[:]
                node.metadata_props.extend(kept)
            for attribute in node.attribute:
                for graph in [attribute.g, *attribute.graphs]:
                    clean(graph.node)
    clean(proto.graph.node)
    for function in proto.functions:
        clean(function.node)
    onnx.save(proto, str(path))


def _root_cause(e: BaseException) -> str:
    """torch wraps the reason an export failed in generic errors; report the innermost one."""
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {first_line(e)}"


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' chatter (progress prints, deprecation and registry warnings)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@dataclass
class Parity:
    outputs: list[dict]                # name, max_abs_error, max_rel_error, tolerance
    samples: int

    def to_dict(self) -> dict:
        return {"samples": self.samples, "outputs": self.outputs}


def check_parity(names: list[str], exported: list[np.ndarray], reference: list[np.ndarray],
                 atol: float = 1e-4, rtol: float = 1e-3) -> Parity:
    """Compare ONNX outputs with PyTorch's; raise naming the worst output when over tolerance.

    An output passes when max |onnx - torch| <= atol + rtol * max |torch|.
    """
    rows = []
    for name, a, b in zip(names, exported, reference):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            raise ExportError(f"exported output '{name}' has shape {a.shape}, PyTorch gives {b.shape}")
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        err = float(np.max(np.abs(a - b))) if b.size else 0.0
        rows.append({"name": name, "max_abs_error": err, "max_rel_error": err / scale if scale else 0.0,
                     "tolerance": atol + rtol * scale})
    worst = max(rows, key=lambda r: r["max_abs_error"] / r["tolerance"])
    if worst["max_abs_error"] > worst["tolerance"]:
        raise ExportError(
            f"the exported ONNX model disagrees with PyTorch on output '{worst['name']}': max abs "
            f"error {worst['max_abs_error']:.3g} > tolerance {worst['tolerance']:.3g} "
            f"(relative {worst['max_rel_error']:.3g})"
        )
    return Parity(rows, len(reference[0]) if reference else 0)
