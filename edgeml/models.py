"""Loading the user's model: ONNX, ExportedProgram (.pt2), TorchScript, or factory + weights.

The result is a `SourceModel` that says what the model is, where it came from (hash), and what
its inputs are; PyTorch kinds carry a callable module for export and for the reference row.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeml.errors import ModelError, first_line
from edgeml.hashing import sha256_arrays, sha256_file
from edgeml.specs import TensorSpec, parse_input_shape, reconcile

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


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

    if path.suffix.lower() == ".onnx":
        return _from_onnx(path, given)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if path.suffix.lower() == ".pt2" or any(n.endswith("/archive_format") for n in names):
            return _from_exported_program(path, given)
        if any("/code/" in n for n in names):
            return _from_torchscript(path, given)
        if any(n.endswith("data.pkl") for n in names):
            raise ModelError(
                f"{path} is a torch.save checkpoint, which edgeml does not unpickle; give the "
                "architecture as package.module:factory and this file with --weights"
            )
    if path.suffix.lower() == ".pt2":
        return _from_exported_program(path, given)  # not a zip: let torch say what is wrong
    return _from_onnx(path, given)


def _from_onnx(path: Path, given: list[TensorSpec]) -> SourceModel:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(str(path))
    except Exception as e:  # onnx raises DecodeError, ValidationError, OSError...
        raise ModelError(f"{path} is not a valid ONNX model ({first_line(e)})") from e
    specs = reconcile(onnx_input_specs(proto), given)
    return SourceModel("onnx", path.stem, sha256_file(path), specs, path=path)


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
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        specs.append(TensorSpec(inp.name, dims, dtype))
    return specs


def _from_exported_program(path: Path, given: list[TensorSpec]) -> SourceModel:
    import torch

    try:
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
                       reconcile(specs, given), path=path, module=program)


def _from_torchscript(path: Path, given: list[TensorSpec]) -> SourceModel:
    import torch

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
