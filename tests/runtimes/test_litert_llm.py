"""LiteRT builds of the tiny LM (edgeml.targets.llm_litert, litert-torch's Hugging Face exporter) run by ai-edge-litert
(edgeml.runtimes.litert_llm): the FP32 file computes what transformers computes, through prefill chunks and up to
the end of its KV cache; the quantized builds stay close; the stream is greedy decoding; the bundle's run.py
generates what was judged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from generators import check_greedy_stream, check_run_py
from tiny_lm import VOCAB

from edgeml.inputs.text import default_calibration, default_evaluation
from edgeml.pipeline.build_apart import build_apart
from edgeml.runtimes.generation import GENERATION_RUNTIMES
from edgeml.targets import get_target
from edgeml.targets.base import LanguageModelBuild
from edgeml.targets.llm_litert import LITERT_LANGUAGE_MODELS

RUNTIME = GENERATION_RUNTIMES["litert"]
CONTEXT = 100          # the short model's: prefills of 32 in chunks, and its last tokens one decode call each


def _build(name: str, model, work):
    """The build in a process of its own, as `edgeml optimize` runs it (the exporter's import patches stay there)."""
    config = json.loads((model / "config.json").read_text())
    out = work / name
    work.mkdir(parents=True, exist_ok=True)
    build_apart("mobile", name, model, out, LanguageModelBuild(default_calibration(), config, work / "build.log", 2))
    return out


@pytest.fixture(scope="module")
def short(tiny_lm, tmp_path_factory):
    """The tiny LM with a context of CONTEXT tokens, its FP32 LiteRT build and the transformers reference."""
    from edgeml.runtimes import transformers_eager

    model = shutil.copytree(tiny_lm, tmp_path_factory.mktemp("short") / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": CONTEXT}))
    out = _build("litert-fp32", model, tmp_path_factory.mktemp("litert"))
    return RUNTIME.open(out, 2), transformers_eager.open_generator(model, 2)


@pytest.fixture(scope="module")
def ids(tiny_lm) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_lm))(default_evaluation().documents[0])["input_ids"][:200]


def test_the_mobile_target_builds_with_litert():
    assert get_target("mobile").language_models[3:] == LITERT_LANGUAGE_MODELS
    assert [(c.precision, c.runtime) for c in LITERT_LANGUAGE_MODELS] == [("fp32", "litert"), ("int8", "litert"),
                                                                          ("int4", "litert")]
    assert RUNTIME.modules == ("ai_edge_litert",)


def test_the_fp32_build_computes_the_transformers_model(short, ids):
    generator, reference = short
    assert generator.max_length == CONTEXT and [n for n, _ in generator.prefills] == [32]
    logits = generator.logits(ids[:CONTEXT])
    expected = reference.logits(ids[:CONTEXT])
    assert logits.shape == (CONTEXT, VOCAB) and logits.dtype == np.float32
    assert np.abs(logits - expected).max() < 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("length", [5, 33, 97, 99])
def test_a_prompt_is_prefilled_in_chunks_and_its_last_tokens_fit_the_end_of_the_cache(short, ids, length):
    """33 tokens: a full prefill of 32, then the last token's decode; 97: three prefills; 99: three prefills and
    two decode calls, as a prefill of 32 no longer fits the cache of 100 at 96. The first new token is the
    original's; the stream stops at the cache's end."""
    generator, reference = short
    prompt = ids[:length]
    tokens = list(generator.stream(prompt, 5))
    assert tokens[0] == int(reference.logits(prompt)[-1].argmax())
    assert len(tokens) == min(5, CONTEXT - length)


def test_the_stream_is_greedy_decoding(short, ids):
    check_greedy_stream(short[0], ids[:20])


@pytest.fixture(scope="module")
def int8(tiny_lm, tmp_path_factory):
    return _build("litert-dynamic-int8", tiny_lm, tmp_path_factory.mktemp("litert-int8"))


def test_the_quantized_builds_stay_close(int8, tiny_lm, ids, tmp_path):
    from edgeml.runtimes import transformers_eager

    int4 = _build("litert-dynamic-int4", tiny_lm, tmp_path)
    reference = transformers_eager.open_generator(tiny_lm, 2).logits(ids).argmax(-1)
    for out, agreement in ((int8, 0.95), (int4, 0.85)):
        assert {p.name for p in out.iterdir()} >= {"model.tflite", "tokenizer.json", "config.json"}
        assert (RUNTIME.open(out, 2).logits(ids).argmax(-1) == reference).mean() > agreement


def test_the_bundle_s_run_py_generates_what_the_build_was_judged_on(int8, ids, tmp_path):
    """run.py's LiteRT runner (no edgeml, no transformers) reproduces the judged runtime's greedy tokens, and
    what LiteRT logs as it loads and tears down stays off the console."""
    check_run_py(int8, "litert", RUNTIME.open(int8, 2), [ids[:12], ids[40:110]], tmp_path / "bundle")
