"""A causal LM as MODEL: which paths are taken as one, a Hugging Face folder checked as it is, a GGUF file turned
into a plain folder that computes what the original does, and the one-line error for each folder it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edgeml.errors import ModelError
from edgeml.inputs.language_model import is_language_model, load_language_model
from edgeml.targets.gguf_file import write_gguf

IDS = torch.tensor([[5, 17, 100, 200, 383, 0, 42, 7, 64, 300]])
TEXT = "def f(x):\n    return x + 1  # café, <|endoftext|> done"
# Measured: F32 GGUF logits equal the original's exactly (0.0); Q8_0 ones differ by at most 0.0063 (0.013 for
# the 120-step model), logits being up to ~3.5 in size.
F32_TOLERANCE = 1e-5
Q8_0_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def tiny(tiny_lm, tmp_path_factory) -> dict[str, Path]:
    """The tiny LM as a Hugging Face folder, an F32 GGUF file and a Q8_0 GGUF file."""
    root = tmp_path_factory.mktemp("tiny_lm")
    folder = tiny_lm
    return {"hf": folder, "gguf": write_gguf(folder, root / "f32" / "tiny.gguf"),
            "q8_0": write_gguf(folder, root / "q8_0" / "tiny-q8_0.gguf", q8_0=True)}


def _logits(folder: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(IDS).logits


def test_what_is_a_language_model(tiny, tmp_path):
    no_suffix = tmp_path / "model"
    shutil.copy(tiny["gguf"], no_suffix)                     # known by its magic bytes
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(100))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.safetensors").write_bytes(b"")
    assert is_language_model(tiny["hf"]) and is_language_model(str(tiny["hf"]))
    assert is_language_model(tiny["gguf"]) and is_language_model(no_suffix)
    assert not is_language_model(onnx) and not is_language_model(plain)
    assert not is_language_model(tmp_path / "nope.gguf") and not is_language_model(torch.nn.Linear(2, 2))


def test_hf_folder_taken_as_it_is(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    lm = load_language_model(tiny["hf"], tmp_path)
    assert (lm.folder, lm.given, lm.format, lm.architecture) == (tiny["hf"], tiny["hf"], "hf-folder",
                                                                 "LlamaForCausalLM")
    model = AutoModelForCausalLM.from_pretrained(str(tiny["hf"]))
    described = lm.describe()
    assert described["parameters"] == sum(p.numel() for p in model.parameters())
    assert (described["context_length"], described["layers"], described["hidden_size"], described["vocab_size"]) \
        == (512, 2, 64, 384)
    assert list(tmp_path.iterdir()) == []                    # nothing written for a folder


def test_gguf_file_becomes_a_plain_folder(tiny, tmp_path):
    from transformers import AutoTokenizer

    lm = load_language_model(tiny["gguf"], tmp_path)
    assert (lm.format, lm.given, lm.folder) == ("gguf", tiny["gguf"], tmp_path / "source")
    config = json.loads((lm.folder / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert lm.describe()["parameters"] == load_language_model(tiny["hf"], tmp_path).describe()["parameters"]
    assert lm.describe()["context_length"] == 512
    assert (_logits(lm.folder) - _logits(tiny["hf"])).abs().max() <= F32_TOLERANCE

    original, kept = AutoTokenizer.from_pretrained(str(tiny["hf"])), AutoTokenizer.from_pretrained(str(lm.folder))
    assert kept(TEXT)["input_ids"] == original(TEXT)["input_ids"]
    assert kept.eos_token == original.eos_token == "<|endoftext|>"
    messages = [{"role": "user", "content": "hello"}]
    assert kept.chat_template == original.chat_template
    assert kept.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == "user: hello\nassistant:"


def test_quantized_gguf_is_dequantized(tiny, tmp_path):
    assert tiny["q8_0"].stat().st_size < tiny["gguf"].stat().st_size / 3
    lm = load_language_model(tiny["q8_0"], tmp_path)
    assert "quantization_config" not in lm.config
    assert (_logits(lm.folder) - _logits(tiny["hf"])).abs().max() <= Q8_0_TOLERANCE


def _edit_config(**changes):
    def edit(folder: Path):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return edit


def _pickled_weights(folder: Path):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")


BROKEN_FOLDERS = {
    "not causal": (_edit_config(architectures=["BertModel"]),
                   "holds a BertModel, not a causal language model; edgeml takes a Hugging Face causal LM folder"),
    "no architecture": (_edit_config(architectures=None, model_type="bert"), "holds a model_type bert, not a causal"),
    "quantized": (_edit_config(quantization_config={"quant_method": "gptq", "bits": 4}),
                  "holds weights already quantized (gptq); give the model's original weights"),
    "pickled weights": (_pickled_weights, "pytorch_model.bin are pickles, which edgeml does not unpickle"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "has no .safetensors weights"),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "has no tokenizer (tokenizer.json or"),
    "unreadable config": (lambda f: (f / "config.json").write_text('{"architectures": ['),
                          "config.json is not readable JSON"),
    "config not an object": (lambda f: (f / "config.json").write_text("[1, 2]"),
                             "config.json holds a JSON list, not an object"),
}


@pytest.mark.parametrize("case", BROKEN_FOLDERS)
def test_refused_folder(case, tiny, tmp_path):
    folder = shutil.copytree(tiny["hf"], tmp_path / "model")
    breaks, message = BROKEN_FOLDERS[case]
    breaks(folder)
    with pytest.raises(ModelError) as e:
        load_language_model(folder, tmp_path / "work")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("keep", [100, 5000, 40_000, -100])
def test_corrupt_gguf(keep, tiny, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny["gguf"].read_bytes()[:keep])
    with pytest.raises(ModelError) as e:
        load_language_model(truncated, tmp_path / "work")
    assert str(e.value).startswith(f"cannot read {truncated} as a GGUF language model: ")
    assert "\n" not in str(e.value)


def test_cli_refuses_a_non_causal_folder(tiny, edgeml_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = shutil.copytree(tiny["hf"], tmp_path / "bert")
    _edit_config(architectures=["BertModel"])(folder)
    result = edgeml_cli("optimize", folder, "-o", tmp_path / "runs" / "out")
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [result.stderr.splitlines()[-1]]
    assert errors[0].startswith(f"error: {folder} holds a BertModel, not a causal language model; edgeml takes")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "runs").exists()
