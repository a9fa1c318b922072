"""Causal language models as MODEL: a Hugging Face folder (config.json, safetensors weights, a tokenizer) or a GGUF
file, which transformers dequantizes; its weights are then copied into a plain model saved as a Hugging Face
folder (a model loaded from GGUF cannot be saved as it is), with its tokenizer and chat template.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from edgeml.captured_output import logged
from edgeml.errors import ModelError, first_line
from edgeml.runtimes.transformers_eager import quiet_transformers

GGUF_MAGIC = b"GGUF"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
TAKES = ("a Hugging Face causal LM folder (config.json with an architecture ending in ForCausalLM, safetensors "
         "weights, a tokenizer) or a GGUF file")


@dataclass(frozen=True)
class LanguageModel:
    """A causal LM as a plain Hugging Face folder, and what the run record says of it."""
    folder: Path
    given: Path
    format: str                  # hf-folder | gguf
    config: dict

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or ["?"])[0]

    def describe(self) -> dict:
        c = self.config
        return {"kind": "language-model", "path": str(self.given), "format": self.format,
                "architecture": self.architecture, "model_type": c.get("model_type"),
                "parameters": parameters(self.folder), "layers": c.get("num_hidden_layers"),
                "hidden_size": c.get("hidden_size"), "vocab_size": c.get("vocab_size"),
                "context_length": context_length(c)}


def is_language_model(model) -> bool:
    """Whether MODEL is given as a folder with a config.json, or as a GGUF file: the language-model kind."""
    if not isinstance(model, (str, Path)):
        return False
    path = Path(model)
    if path.is_dir():
        return (path / "config.json").is_file()
    return path.is_file() and (path.suffix.lower() == ".gguf" or _magic(path) == GGUF_MAGIC)


def _magic(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(4)
    except OSError:                 # unreadable: not taken as a language model; its own loader says why
        return b""


def context_length(config: dict) -> int:
    return int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)


def parameters(folder: Path) -> int:
    """The number of weights in the folder's safetensors files, read from their headers."""
    return sum(math.prod(shape) for shape in weight_shapes(folder).values())


def weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the weights in the folder's safetensors files, read from their headers."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "np") as f:
            shapes.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})
    return shapes


def load_language_model(path: str | Path, work: Path) -> LanguageModel:
    """Check a Hugging Face folder and take it as it is, or turn a GGUF file into one in `work`."""
    path = Path(path)
    if path.is_dir():
        return LanguageModel(path, path, "hf-folder", _checked_folder(path))
    return _from_gguf(path, work / "source")


def _checked_folder(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder / 'config.json'} is not readable JSON ({first_line(e)})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{folder / 'config.json'} holds a JSON {type(config).__name__}, not an object of "
                         "model settings")
    architectures = config.get("architectures") or []
    if isinstance(architectures, str):
        architectures = [architectures]
    if not any(str(a).endswith("ForCausalLM") for a in architectures):
        what = ", ".join(map(str, architectures)) or f"model_type {config.get('model_type', '?')}"
        raise ModelError(f"{folder} holds a {what}, not a causal language model; edgeml takes {TAKES}, or an "
                         "ONNX, .pt2 or TorchScript file")
    if config.get("quantization_config"):
        quantization = config["quantization_config"]
        method = quantization.get("quant_method", "quantized") if isinstance(quantization, dict) else "quantized"
        raise ModelError(f"{folder} holds weights already quantized ({method}); give the model's original weights")
    if not list(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.glob("*.bin")]
        raise ModelError(f"{folder} has no .safetensors weights" + (
            f" ({', '.join(pickles)} are pickles, which edgeml does not unpickle: convert them to safetensors)"
            if pickles else ""))
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelError(f"{folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    return config


def _from_gguf(file: Path, out: Path) -> LanguageModel:
    """Dequantize a GGUF file with transformers and save it as a plain FP32 Hugging Face folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    try:
        with logged(out.parent / "gguf.log"):      # its own progress bar, which quiet_transformers does not reach
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
            loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many kinds for files it cannot read
        raise ModelError(f"cannot read {file} as a GGUF language model: {type(e).__name__}: "
                         f"{first_line(e, 300)}") from None
    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**settings), dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.eval().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return LanguageModel(out, file, "gguf", json.loads((out / "config.json").read_text()))
