"""OpenVINO GenAI builds of the tiny LM (edgeml.targets.llm_openvino) run by their generator
(edgeml.runtimes.openvino_genai): each candidate builds, its logits follow the transformers model's, and its stream
is LLMPipeline's greedy loop (the argmax of the logits fed back), honouring stop tokens, max_new_tokens and an early
close."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_lm import VOCAB

pytest.importorskip("openvino_genai")
pytest.importorskip("nncf")
pytest.importorskip("openvino_tokenizers")

from edgeml.inputs.text import Text, default_calibration, default_evaluation  # noqa: E402
from edgeml.runtimes.generation import GENERATION_RUNTIMES  # noqa: E402
from edgeml.targets.base import BuildRefused, LanguageModelBuild  # noqa: E402
from edgeml.targets.llm_openvino import (  # noqa: E402
    CALIBRATION_SAMPLES,
    CALIBRATION_TOKENS,
    OPENVINO_LANGUAGE_MODELS,
    calibration_inputs,
    group_size,
)

CANDIDATES = {c.name: c for c in OPENVINO_LANGUAGE_MODELS}
# Top-1 agreement with the transformers model over 300 positions of held-out text (measured: INT8 0.997, INT4 and
# INT4 AWQ 0.977).
AGREEMENT = {"int8": 0.97, "int4": 0.85}


@pytest.fixture(scope="module")
def source(tiny_lm):
    return tiny_lm


@pytest.fixture(scope="module")
def context(source, tmp_path_factory) -> LanguageModelBuild:
    config = json.loads((source / "config.json").read_text())
    return LanguageModelBuild(default_calibration(), config, tmp_path_factory.mktemp("logs") / "build.log")


@pytest.fixture(scope="module")
def generators(source, context, tmp_path_factory) -> dict:
    """Each candidate built and opened."""
    runtime = GENERATION_RUNTIMES["openvino-genai"]
    opened = {}
    for name, candidate in CANDIDATES.items():
        out = tmp_path_factory.mktemp(name)
        candidate.build(source, out, context)
        opened[name] = runtime.open(out, 2)
    return opened


@pytest.fixture(scope="module")
def ids(source) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    return tokenizer(default_evaluation().documents[0])["input_ids"][:300]


@pytest.fixture(scope="module")
def reference(source, ids) -> np.ndarray:
    from edgeml.runtimes import transformers_eager

    return transformers_eager.open_generator(source, 2).logits(ids)


def test_the_runtime_and_the_candidates_are_declared():
    runtime = GENERATION_RUNTIMES["openvino-genai"]
    assert runtime.modules == ("openvino_genai", "openvino") and runtime.extra == "edgeml[llm]"
    assert not runtime.missing()
    assert list(CANDIDATES) == ["openvino-genai-int8", "openvino-genai-int4", "openvino-genai-int4-awq"]
    assert [c.precision for c in CANDIDATES.values()] == ["int8", "int4", "int4"]
    assert [c.data_aware for c in CANDIDATES.values()] == [False, False, True]
    for candidate in CANDIDATES.values():
        assert candidate.runtime == "openvino-genai" and candidate.method and not candidate.missing()


def test_group_size_divides_the_hidden_size():
    assert group_size({"hidden_size": 576}) == 64         # SmolLM2-135M: 128 does not divide it
    assert group_size({"hidden_size": 2048}) == 128
    assert group_size({"hidden_size": 96}) == 32
    assert group_size({"hidden_size": 100}) == -1        # one scale per output channel
    assert group_size({"text_config": {"hidden_size": 64}}) == 64


def test_calibration_is_bounded(source, context):
    inputs = calibration_inputs(source, context)
    assert 1 < len(inputs) <= CALIBRATION_SAMPLES
    for sample in inputs:
        n = sample["input_ids"].shape[1]
        assert 0 < n <= CALIBRATION_TOKENS
        assert sample["attention_mask"].shape == (1, n) and sample["position_ids"].tolist() == [list(range(n))]
        assert sample["beam_idx"].tolist() == [0]


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_logits_follow_the_original(name, generators, ids, reference):
    logits = generators[name].logits(ids)
    assert logits.shape == (len(ids), VOCAB) and logits.dtype == np.float32
    agreement = float((logits.argmax(-1) == reference.argmax(-1)).mean())
    assert agreement >= AGREEMENT[CANDIDATES[name].precision], agreement
    assert np.allclose(generators[name].logits(ids[:50]), logits[:50], atol=1e-3)    # from an empty cache each time


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_stream_is_greedy_decoding(name, generators, ids):
    generator, prompt = generators[name], ids[:20]
    expected, sequence = [], list(prompt)
    for _ in range(6):
        expected.append(int(generator.logits(sequence)[-1].argmax()))
        sequence.append(expected[-1])
    assert list(generator.stream(prompt, 6)) == expected


def test_stream_honours_stop_tokens_and_max_new_tokens(generators, ids):
    generator, prompt = generators["openvino-genai-int8"], ids[:20]
    tokens = list(generator.stream(prompt, 12))
    assert len(tokens) == 12
    assert len(list(generator.stream(prompt, 3))) == 3
    stop = tokens[4]
    assert list(generator.stream(prompt, 12, stop={stop})) == tokens[:tokens.index(stop) + 1]


def test_closing_the_stream_stops_the_generation(generators, ids):
    generator, prompt = generators["openvino-genai-int8"], ids[:20]
    stream = generator.stream(prompt, 400)
    first = [next(stream), next(stream)]
    stream.close()
    assert list(generator.stream(prompt, 2)) == first      # the pipeline is free again, and starts afresh


def test_a_model_the_exporter_cannot_take_is_refused(tmp_path, context):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    log = tmp_path / "build.log"
    build = LanguageModelBuild(Text(("x",), ("x",), "test"), {"hidden_size": 64}, log)
    with pytest.raises(BuildRefused, match=r"^openvino: export failed: "):
        CANDIDATES["openvino-genai-int8"].build(folder, tmp_path / "out", build)
    assert "Traceback" in log.read_text()
