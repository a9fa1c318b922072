"""Loading the user's model: ONNX, ExportedProgram (.pt2), TorchScript, or factory + weights.

The result is a `SourceModel` that says what the model is, where it came from (hash), and what
its inputs are; PyTorch kinds carry a callable module for export and for the reference row.

TorchScript and ExportedProgram files are programs: they load after a warning on stderr, or are
refused inside `safe_loading()` (the CLI's --safe). Checkpoints load with weights_only=True, and
other pickles are never loaded.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeml.errors import ModelError, first_line
from edgeml.hashing import sha256_arrays, sha256_file
from edgeml.inputs.specs import TensorSpec, parse_input_shape, reconcile, with_batch_axes

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".ptl", ".jit")
_SAFE = ContextVar("edgeml_safe_loading", default=False)


@contextmanager
def safe_loading(safe: bool = True) -> Iterator[None]:
    """While inside, `load_model` refuses TorchScript and ExportedProgram files instead of warning."""
    token = _SAFE.set(safe)
    try:
        yield
    finally:
        _SAFE.reset(token)


@dataclass
class SourceModel:
    kind: str                      # onnx | exported_program | torchscript | factory | module
    name: str                      # short name, used for default output folders
    sha256: str
    inputs: list[TensorSpec]
    path: Path | None = None       # the file given (for factory: the weights file)
    module: Any = None             # a torch callable, for the PyTorch kinds
    notes: list[str] = field(default_factory=list)
    reload: dict | None = None     # load_model arguments that load it again (None: in-memory module)

    @property
    def is_torch(self) -> bool:
        return self.kind != "onnx"

    @property
    def callable(self):
        """The torch callable (an ExportedProgram is called through its .module())."""
        return self.module.module() if self.kind == "exported_program" else self.module

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "inputs": [s.to_dict() for s in self.inputs],
            "notes": self.notes,
        }


def load_model(model: Any, weights: str | Path | None = None,
               input_shapes: list[str] | tuple[str, ...] = ()) -> SourceModel:
    """Load `model` (a path, a `package.module:factory` string, or a torch.nn.Module).

    `input_shapes` are --input-shape strings; they fill in what the model does not say.
    """
    given = [parse_input_shape(s) for s in input_shapes]
    if not isinstance(model, (str, Path)):
        if weights is not None:
            raise ModelError("--weights is only used with a package.module:factory model")
        return _from_module(model, given)
    source = _from_path_or_factory(str(model), weights, given)
    source.reload = {"model": str(model), "weights": None if weights is None else str(weights),
                     "input_shapes": list(input_shapes)}
    return source


def _from_path_or_factory(text: str, weights, given: list[TensorSpec]) -> SourceModel:
    path = Path(text)
    if not path.exists() and _FACTORY.match(text):
        return _from_factory(text, weights, given)
    if weights is not None:
        raise ModelError("--weights is only used with a package.module:factory model")
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty")

    if path.suffix.lower() == ".onnx":
        return _from_onnx(path, given)
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if path.suffix.lower() == ".pt2" or any(n.endswith("/archive_format") for n in names):
            return _from_exported_program(path, names, given)
        if any("/code/" in n for n in names):
            return _from_torchscript(path, given)
        if any(n.endswith("data.pkl") for n in names):
            raise ModelError(
                f"{path} is a torch.save checkpoint, which edgeml does not unpickle; give the "
                "architecture as package.module:factory and this file with --weights"
            )
    if _is_pickle(path):
        raise ModelError(f"{path} is a pickle, which can run code when loaded; edgeml does not unpickle models: give "
                         "the architecture as package.module:factory and a plain state_dict with --weights")
    if path.suffix.lower() in TORCH_SUFFIXES:
        raise ModelError(f"{path} is a zip archive, but not a .pt2 ExportedProgram, a TorchScript model or a "
                         "torch.save checkpoint" if is_zip else
                         f"{path} is not a zip archive: the file is truncated or corrupt (.pt2 and TorchScript "
                         "files are zip archives)")
    return _from_onnx(path, given)


def _is_pickle(path: Path) -> bool:
    """Pickle protocol 2 and later (torch.save's legacy format included) start with PROTO."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def _untrusted(path: Path, what: str, risk: str) -> None:
    """Refuse a program file under --safe; otherwise warn before it is loaded."""
    if _SAFE.get():
        raise ModelError(f"{path} is {what}, {risk}; --safe refuses it: give the architecture as "
                         "package.module:factory and its state_dict with --weights")
    print(f"warning: {path} is {what}, {risk}: load it only from a source you trust (--safe refuses it)",
          file=sys.stderr)


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Keep a library's log records off stderr (torch logs a traceback before it raises)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _from_onnx(path: Path, given: list[TensorSpec]) -> SourceModel:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError...
        raise ModelError(f"{path} is not a valid ONNX model ({first_line(e)})") from e
    _check_external_data(proto, path)
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # ValidationError, and others for unusual models
        raise ModelError(f"{path} is not a valid ONNX model ({first_line(e)})") from e
    specs = reconcile(with_batch_axes(onnx_input_specs(proto)), given)
    return SourceModel("onnx", path.stem, sha256_file(path), specs, path=path)


def _check_external_data(proto, path: Path) -> None:
    """Tensors kept in files beside the model must stay in its folder (no `..`, absolute path or link out)."""
    folder = path.parent.resolve()
    for name, location in external_data(proto):
        data = path.parent / location
        if not data.resolve().is_relative_to(folder):
            raise ModelError(f"{path}: tensor '{name}' keeps its data in '{location}', outside the model's "
                             "folder; edgeml reads external data only from inside it")
        if not data.is_file():
            raise ModelError(f"{path}: tensor '{name}' keeps its data in '{location}', which does not exist")


def external_data(proto) -> list[tuple[str, str]]:
    """(tensor name, file) of every tensor of an ONNX model whose data is kept in a file beside it."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [(t.name, next((e.value for e in t.external_data if e.key == "location"), ""))
            for t in _get_all_tensors(proto) if uses_external_data(t)]


def onnx_input_specs(proto) -> list[TensorSpec]:
    """The graph inputs that are fed at run time (initializers excluded)."""
    initializers = {i.name for i in proto.graph.initializer}
    return _value_specs(v for v in proto.graph.input if v.name not in initializers)


def onnx_output_specs(proto) -> list[TensorSpec]:
    return _value_specs(proto.graph.output)


def _value_specs(values) -> list[TensorSpec]:
    import onnx

    specs = []
    for inp in values:
        t = inp.type.tensor_type
        # A dim_value of 0 or below is no size: PaddlePaddle's exports write -1 for "any".
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                     for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        specs.append(TensorSpec(inp.name, dims, dtype))
    return specs


def _from_exported_program(path: Path, names: list[str], given: list[TensorSpec]) -> SourceModel:
    import torch

    _check_schema(path, names)
    _untrusted(path, "an ExportedProgram", "a serialised program")
    try:
        with _quiet("torch.export"):
            program = torch.export.load(str(path))
    except Exception as e:
        raise ModelError(
            f"cannot load ExportedProgram {path} ({first_line(e)}); it must be written by "
            f"torch.export.save with torch {torch.__version__.split('+')[0]}"
        ) from e
    user_inputs = set(program.graph_signature.user_inputs)
    specs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            val = node.meta.get("val")
            if not hasattr(val, "shape"):
                raise ModelError(f"{path}: input '{node.name}' is not a tensor; edgeml needs tensor inputs")
            dims = tuple(int(d) if isinstance(d, int) else ("batch" if i == 0 else str(d))
                         for i, d in enumerate(val.shape))
            specs.append(TensorSpec(node.name, dims, str(val.dtype).removeprefix("torch.")))
    return SourceModel("exported_program", path.stem, sha256_file(path),
                       reconcile(with_batch_axes(specs), given), path=path, module=program)


def _check_schema(path: Path, names: list[str]) -> None:
    """Name the torch release that wrote a .pt2 file when this torch cannot read its schema."""
    import torch
    from torch._export.serde.schema import SCHEMA_VERSION

    programs = [n for n in names if n.endswith("/models/model.json")]
    if not programs:
        return
    try:
        with zipfile.ZipFile(path) as archive:
            written = json.loads(archive.read(programs[0]))
        major, minor = written["schema_version"]["major"], written["schema_version"]["minor"]
    except (OSError, zipfile.BadZipFile, ValueError, TypeError, KeyError):
        return  # torch.export.load says what is wrong
    if major != SCHEMA_VERSION[0]:
        ours = torch.__version__.split("+")[0]
        raise ModelError(
            f"{path} was written by torch {written.get('torch_version', '(unknown)')} (export schema {major}.{minor}); "
            f"this torch {ours} reads schema {SCHEMA_VERSION[0]}.x: export it again with torch {ours}, or give "
            "package.module:factory with --weights"
        )


def _from_torchscript(path: Path, given: list[TensorSpec]) -> SourceModel:
    import torch

    _untrusted(path, "a TorchScript program", "which can run code when loaded")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ModelError(f"cannot load TorchScript model {path} ({first_line(e)})") from e
    module.eval()
    names = [a.name for a in module.forward.schema.arguments[1:]]
    specs = reconcile(None, given, default_names=names)
    return SourceModel("torchscript", path.stem, sha256_file(path), specs, path=path, module=module)


def _from_factory(spec: str, weights: str | Path | None, given: list[TensorSpec]) -> SourceModel:
    import torch

    module_name, attr = spec.split(":")
    if "" not in sys.path:  # like `python -m`, let the user's own package in the cwd import
        sys.path.insert(0, "")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ModelError(f"cannot import factory {spec} ({first_line(e)})") from e
    try:
        module = factory()
    except Exception as e:
        raise ModelError(f"factory {spec}() failed: {first_line(e)}") from e
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"factory {spec}() returned {type(module).__name__}, not a torch.nn.Module")

    if weights is None:
        digest = state_hash(module)
    else:
        wpath = Path(weights)
        if not wpath.is_file():
            raise ModelError(f"weights file not found: {wpath}")
        _load_weights(module, wpath)
        digest = sha256_file(wpath)
    module.eval()
    names = _forward_arg_names(module)
    specs = reconcile(None, given, default_names=names)
    return SourceModel("factory", attr, digest, specs, path=Path(weights) if weights else None, module=module)


def _load_weights(module, path: Path) -> None:
    import torch

    try:
        with warnings.catch_warnings():        # torch warns about pickle protocols it may not support
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelError(
            f"{path} holds Python objects, not just tensors; edgeml loads weights with "
            "weights_only=True and will not run code from a checkpoint. Save a plain state_dict "
            "with torch.save(model.state_dict(), path)"
        ) from e
    except Exception as e:
        raise ModelError(
            f"cannot load weights {path} with weights_only=True ({first_line(e)}); "
            "save a plain state_dict with torch.save(model.state_dict(), path)"
        ) from e
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state_dict")
    result = module.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:5])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:5])}")
    if problems:
        raise ModelError(f"weights {path} do not fit the factory's model: {'; '.join(problems)}")


def _from_module(module, given: list[TensorSpec]) -> SourceModel:
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"model must be a path, a package.module:factory string or a torch.nn.Module, "
            f"not {type(module).__name__}"
        )
    module.eval()
    specs = reconcile(None, given, default_names=_forward_arg_names(module))
    return SourceModel("module", type(module).__name__, state_hash(module), specs, module=module)


def state_hash(module) -> str:
    return sha256_arrays({k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})


def _forward_arg_names(module) -> list[str]:
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
