"""ExecuTorch builds of the tiny LM (edgeml.targets.llm_executorch) run by ExecuTorch's runtime
(edgeml.runtimes.executorch_llm): the FP32 program computes what transformers does from a static KV cache in the
program, its stream is greedy decoding that honours stop tokens, max_new_tokens and an early close, and a sequence
longer than its cache is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from generators import check_greedy_stream
from tiny_lm import VOCAB

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from edgeml.errors import EdgemlError  # noqa: E402
from edgeml.inputs.text import Text, default_calibration, default_evaluation  # noqa: E402
from edgeml.runtimes.generation import GENERATION_RUNTIMES  # noqa: E402
from edgeml.targets import get_target  # noqa: E402
from edgeml.targets.base import CACHE_TOKENS, BuildRefused, LanguageModelBuild, cache_length  # noqa: E402
from edgeml.targets.llm_executorch import EXECUTORCH_LANGUAGE_MODELS  # noqa: E402

CANDIDATES = {c.name: c for c in EXECUTORCH_LANGUAGE_MODELS}


@pytest.fixture(scope="module")
def context(tiny_lm, tmp_path_factory) -> LanguageModelBuild:
    config = json.loads((tiny_lm / "config.json").read_text())
    return LanguageModelBuild(default_calibration(), config, tmp_path_factory.mktemp("logs") / "build.log", 2)


@pytest.fixture(scope="module")
def fp32(tiny_lm, context, tmp_path_factory):
    out = tmp_path_factory.mktemp("executorch-fp32")
    CANDIDATES["executorch-xnnpack-fp32"].build(tiny_lm, out, context)
    return out, GENERATION_RUNTIMES["executorch"].open(out, 2)


@pytest.fixture(scope="module")
def ids(tiny_lm) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm))
    return tokenizer(default_evaluation().documents[0])["input_ids"][:300]


def test_the_mobile_target_builds_language_models_with_executorch():
    assert get_target("mobile").language_models[:3] == EXECUTORCH_LANGUAGE_MODELS
    assert list(CANDIDATES) == ["executorch-xnnpack-fp32", "executorch-xnnpack-8da8w", "executorch-xnnpack-8da4w"]
    assert [c.precision for c in CANDIDATES.values()] == ["fp32", "int8", "int4"]
    runtime = GENERATION_RUNTIMES["executorch"]
    assert runtime.extra == "edgeml[llm]" and not runtime.missing()
    for candidate in CANDIDATES.values():
        assert candidate.runtime == "executorch" and candidate.method and not candidate.missing()


def test_the_cache_holds_the_model_context_up_to_a_bound():
    assert cache_length({"max_position_embeddings": 512}) == 512
    assert cache_length({"max_position_embeddings": 8192}) == CACHE_TOKENS
    assert cache_length({"text_config": {"max_position_embeddings": 1024}}) == 1024


def test_the_program_carries_what_executorch_runners_read(fp32, tiny_lm):
    from executorch.runtime import Runtime

    out, _ = fp32
    program = Runtime.get().load_program(str(out / "model.pte"))
    assert {"forward", "get_max_seq_len", "get_vocab_size", "use_kv_cache"} <= set(program.method_names)
    assert program.load_method("get_vocab_size").execute([])[0] == VOCAB
    assert {p.name for p in out.iterdir()} >= {"model.pte", "tokenizer.json", "config.json"}


def test_fp32_logits_are_the_transformers_model_s(fp32, tiny_lm, ids):
    from edgeml.runtimes import transformers_eager

    _, generator = fp32
    reference = transformers_eager.open_generator(tiny_lm, 2).logits(ids)
    logits = generator.logits(ids)
    assert logits.shape == (len(ids), VOCAB) and logits.dtype == np.float32
    assert np.abs(logits - reference).max() < 1e-3 * np.abs(reference).max()
    assert np.allclose(generator.logits(ids[:50]), logits[:50], atol=1e-5)     # a new sequence overwrites the cache


def test_stream_is_greedy_decoding_from_the_cache(fp32, ids):
    _, generator = fp32
    prompt = ids[:20]
    tokens = check_greedy_stream(generator, prompt)
    stream = generator.stream(prompt, 400)
    first = [next(stream), next(stream)]
    stream.close()
    assert first == tokens[:2]


def test_a_sequence_longer_than_the_cache_is_refused_and_a_stream_stops_at_its_end(fp32, ids):
    _, generator = fp32
    assert generator.max_length == 512                  # the tiny LM's context
    with pytest.raises(EdgemlError, match="do not fit this build's KV cache of 512"):
        generator.logits(list(ids) * 2)
    prompt = (list(ids) * 2)[:508]
    assert len(list(generator.stream(prompt, 50))) == 4


def test_a_model_torch_export_cannot_take_is_refused(tmp_path, context):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    log = tmp_path / "build.log"
    build = LanguageModelBuild(Text(("x",), ("x",), "test"), {"max_position_embeddings": 64}, log)
    with pytest.raises(BuildRefused, match=r"^executorch: loading failed: "):
        CANDIDATES["executorch-xnnpack-8da4w"].build(folder, tmp_path / "out", build)
    assert "Traceback" in log.read_text()


def test_a_model_with_sliding_window_attention_is_refused(tiny_lm, tmp_path, context):
    """custom_sdpa attends to every cached token: a layer with a shorter window would compute another model."""
    import shutil

    model = shutil.copytree(tiny_lm, tmp_path / "windowed")
    config = json.loads((model / "config.json").read_text())
    windowed = {**config, "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"]}
    (model / "config.json").write_text(json.dumps(windowed))
    build = LanguageModelBuild(context.calibration, windowed, tmp_path / "build.log")
    with pytest.raises(BuildRefused, match=r"^executorch: layers with sliding-window attention \(128 tokens\)"):
        CANDIDATES["executorch-xnnpack-fp32"].build(model, tmp_path / "out", build)
