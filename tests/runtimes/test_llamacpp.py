"""llama.cpp builds of the tiny LM (edgeml.targets.llm_llamacpp) run by llama.cpp (edgeml.runtimes.llamacpp): the GGUF
file edgeml writes computes in llama.cpp what transformers computes (Llama; Qwen2 with its biases; Qwen3), Q8_0 stays
close, the stream is greedy decoding that honours stop tokens, and what the writer cannot take is refused in one
line. Where llama-cpp-python is not installed (the opt-in `llamacpp` extra), its rows are unavailable and say how
to install it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from generators import check_greedy_stream, check_run_py
from tiny_lm import VOCAB

from edgeml.errors import EdgemlError
from edgeml.inputs.text import default_calibration, default_evaluation
from edgeml.runtimes.generation import GENERATION_RUNTIMES
from edgeml.targets import get_target
from edgeml.targets.base import BuildRefused, LanguageModelBuild
from edgeml.targets.gguf_file import write_gguf
from edgeml.targets.llm_llamacpp import LLAMACPP_LANGUAGE_MODELS

CANDIDATES = {c.name: c for c in LLAMACPP_LANGUAGE_MODELS}
RUNTIME = GENERATION_RUNTIMES["llama-cpp"]
needs_llama_cpp = pytest.mark.skipif(bool(RUNTIME.missing()), reason="llama-cpp-python is not installed (the opt-in "
                                     "llamacpp extra: pip compiles llama.cpp)")


def _context(config: dict, tmp_path) -> LanguageModelBuild:
    return LanguageModelBuild(default_calibration(), config, tmp_path / "build.log", 2)


def _build(name: str, model, tmp_path):
    config = json.loads((model / "config.json").read_text())
    out = tmp_path / name
    CANDIDATES[name].build(model, out, _context(config, tmp_path))
    return out, RUNTIME.open(out, 2)


@pytest.fixture(scope="module")
def ids(tiny_lm) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_lm))(default_evaluation().documents[0])["input_ids"][:200]


def _random(kind: str, tiny_lm, tmp_path_factory, **config):
    """A tiny random model of transformers' `kind` (Qwen2, Qwen3) with the tiny LM's tokenizer."""
    import torch
    import transformers

    folder = tmp_path_factory.mktemp(kind) / f"tiny-{kind}"
    torch.manual_seed(0)
    settings = getattr(transformers, f"{kind}Config")(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=0, eos_token_id=0, **config)
    getattr(transformers, f"{kind}ForCausalLM")(settings).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_lm / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def qwen2(tiny_lm, tmp_path_factory):
    """Biases on q, k and v; the LM head tied to the embedding."""
    return _random("Qwen2", tiny_lm, tmp_path_factory, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def qwen3(tiny_lm, tmp_path_factory):
    """RMSNorm on each head's q and k; heads of 32 (not hidden / heads)."""
    return _random("Qwen3", tiny_lm, tmp_path_factory, head_dim=32)


def test_the_cpu_target_builds_with_llama_cpp_where_it_is_installed():
    assert set(CANDIDATES) <= {c.name for c in get_target("cpu").language_models}
    assert [(c.precision, c.runtime) for c in CANDIDATES.values()] == [("int8", "llama-cpp"), ("int4", "llama-cpp"),
                                                                       ("int4", "llama-cpp")]
    assert RUNTIME.extra == "edgeml[llamacpp]" and RUNTIME.modules == ("llama_cpp",)
    for candidate in CANDIDATES.values():
        assert candidate.missing() == RUNTIME.missing()


@needs_llama_cpp
@pytest.mark.parametrize("model", ["tiny_lm", "qwen2", "qwen3"])
def test_the_f32_gguf_computes_the_transformers_model_in_llama_cpp(model, request, ids, tmp_path):
    from edgeml.runtimes import transformers_eager
    from edgeml.runtimes.llamacpp import MODEL, SETTINGS

    folder = request.getfixturevalue(model)
    out = tmp_path / "f32"
    out.mkdir()
    write_gguf(folder, out / MODEL)
    (out / SETTINGS).write_text(json.dumps({"n_ctx": 512}))
    reference = transformers_eager.open_generator(folder, 2).logits(ids)
    logits = RUNTIME.open(out, 2).logits(ids)
    assert logits.shape == (len(ids), VOCAB) and logits.dtype == np.float32
    assert np.abs(logits - reference).max() < 1e-3 * np.abs(reference).max()


@needs_llama_cpp
def test_q8_0_stays_close_and_its_stream_is_greedy_decoding(tiny_lm, ids, tmp_path):
    from edgeml.runtimes import transformers_eager

    out, generator = _build("llama-cpp-q8_0", tiny_lm, tmp_path)
    assert {p.name for p in out.iterdir()} >= {"model.gguf", "llama_cpp.json", "tokenizer.json", "config.json"}
    reference = transformers_eager.open_generator(tiny_lm, 2).logits(ids)
    logits = generator.logits(ids)
    assert (logits.argmax(-1) == reference.argmax(-1)).mean() > 0.9
    check_greedy_stream(generator, ids[:20])


@needs_llama_cpp
def test_a_sequence_longer_than_the_context_is_refused_and_a_stream_stops_at_its_end(tiny_lm, ids, tmp_path):
    _, generator = _build("llama-cpp-q4_0", tiny_lm, tmp_path)
    assert generator.max_length == 512                  # the tiny LM's context
    with pytest.raises(EdgemlError, match="do not fit this build's KV cache of 512"):
        generator.logits(list(ids) * 3)
    assert len(list(generator.stream((list(ids) * 3)[:508], 50))) == 4


@pytest.mark.parametrize("change, message", [
    ({"architectures": ["GPT2LMHeadModel"]}, r"^llama.cpp: GPT2LMHeadModel is not written to GGUF here"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
     r"^llama.cpp: rope scaling 'llama3' is not written"),
    ({"sliding_window": 128}, r"^llama.cpp: layers with sliding-window attention \(128 tokens\)"),
])
def test_what_the_gguf_writer_cannot_take_is_refused(tiny_lm, tmp_path, change, message):
    model = shutil.copytree(tiny_lm, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(BuildRefused, match=message):
        write_gguf(model, tmp_path / "out" / "model.gguf")
    assert not (tmp_path / "out" / "model.gguf").exists()


@needs_llama_cpp
def test_the_bundle_s_run_py_generates_what_the_build_was_judged_on(tiny_lm, ids, tmp_path):
    """run.py's llama.cpp runner (no edgeml, no transformers) reproduces the judged runtime's greedy tokens."""
    build, generator = _build("llama-cpp-q4_k_m", tiny_lm, tmp_path)
    check_run_py(build, "llama-cpp", generator, [ids[:12], ids[40:70]], tmp_path / "bundle")
