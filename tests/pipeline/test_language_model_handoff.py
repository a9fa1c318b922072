"""The Jetson's language-model builds (targets/llm_tensorrt_edge.py): TensorRT Edge-LLM hand-offs judged here with
transformers on the weights the engine computes with, their speed predicted for the device profile, bundled with the
script that builds the engine there."""

import dataclasses
import json
import subprocess
import sys

import pytest

from edgeml.inputs.language_model import LanguageModel, weight_shapes
from edgeml.inputs.text import default_calibration, default_evaluation, read_text
from edgeml.pipeline.language_model import NEW_TOKENS, PROMPT_LENGTHS, Judge, Tokens, _candidate, _new_run, _select
from edgeml.pipeline.recipe import Recipe
from edgeml.profiles import load_profile
from edgeml.runtimes.generation import GENERATION_RUNTIMES
from edgeml.targets.jetson import JETSON
from edgeml.targets.llm_tensorrt import predict


@pytest.fixture(scope="module")
def judged(tiny_lm, lm_texts, tmp_path_factory):
    """Both Jetson builds of the tiny LM, judged against the original (no timing: nothing runs on a Jetson here)."""
    work = tmp_path_factory.mktemp("handoff")
    lm = LanguageModel(tiny_lm, tiny_lm, "hf-folder", json.loads((tiny_lm / "config.json").read_text()))
    judge = Judge(Tokens(tiny_lm), read_text(lm_texts[1]), 512)
    judge.remember(GENERATION_RUNTIMES["transformers"].open(tiny_lm, 2))
    recipe, profile = Recipe(target="jetson"), load_profile("jetson-orin-nano")
    built, answers, contexts = {}, {}, {}
    rows = [_candidate(c, lm, judge, default_calibration(), work, 2, recipe, built, answers, contexts, profile)
            for c in JETSON.language_models]
    return lm, judge, rows, built, answers, contexts, recipe, work


def test_each_build_is_judged_here_and_its_speed_predicted_for_the_profile(judged):
    _, _, rows, built, _, contexts, _, _ = judged
    fp16, int4 = rows
    assert [r.status for r in rows] == ["predicted", "predicted"]
    assert all(r.backend == "tensorrt-edgellm" and r.latency is None and r.peak_memory_bytes is None for r in rows)
    # FP16 rounding barely moves the tiny FP32 model; INT4 rounding moves it more, and differs from the original
    assert abs(fp16.metrics["ppl_increase"]) < 0.01 and fp16.metrics["top1_agreement"] > 0.98
    assert int4.metrics["kl"] > fp16.metrics["kl"] and int4.metrics["top1_agreement"] < 1.0
    for row in rows:
        assert row.predicted["profile"] == "jetson-orin-nano" and row.predicted["decode_tokens_per_s"] > 0
        assert set(row.predicted["ttft_ms"]) == {str(n) for n in PROMPT_LENGTHS}
        assert contexts[row.name] == 512            # the tiny LM's context, under the engine's KV capacity
    assert int4.size_bytes < fp16.size_bytes        # the engine's weights: INT4 blocks and their scales
    script = (built[int4.name] / "build_engine.sh").read_text()
    assert "--quantization int4_awq" in script and "--maxKVCacheCapacity 512" in script
    assert "tensorrt-edgellm-quantize-llm" not in (built[fp16.name] / "build_engine.sh").read_text()
    assert (built[fp16.name] / "checkpoint" / "tokenizer.json").is_file()


def test_the_prediction_follows_the_profile_and_refuses_what_does_not_fit(tiny_lm):
    from edgeml.targets.base import BuildRefused

    config = json.loads((tiny_lm / "config.json").read_text())
    shapes, orin = weight_shapes(tiny_lm), load_profile("jetson-orin-nano")
    faster = dataclasses.replace(orin, memory_bandwidth_gbs=orin.memory_bandwidth_gbs * 4,
                                 efficiency={**orin.efficiency, "layer_overhead_us": 0})
    slow, fast = (predict(shapes, config, p, False, PROMPT_LENGTHS, NEW_TOKENS) for p in (orin, faster))
    assert fast["decode_tokens_per_s"] > slow["decode_tokens_per_s"]
    no_overhead = dataclasses.replace(orin, efficiency={**orin.efficiency, "layer_overhead_us": 0})
    fp16, int4 = (predict(shapes, config, no_overhead, q, PROMPT_LENGTHS, NEW_TOKENS) for q in (False, True))
    assert int4["bytes_per_token"] < fp16["bytes_per_token"]
    assert int4["decode_tokens_per_s"] / fp16["decode_tokens_per_s"] == pytest.approx(
        fp16["bytes_per_token"] / int4["bytes_per_token"])
    with pytest.raises(BuildRefused, match="GB for its weights and a KV cache of 512 tokens"):
        predict(shapes, config, dataclasses.replace(orin, memory_gb=1e-4), False, PROMPT_LENGTHS, NEW_TOKENS)


def test_predictions_within_2_percent_are_tied_and_the_bundle_is_the_hand_off(judged, tmp_path, edgeml_cli):
    from edgeml.bundle.language_model import write_language_model_bundle
    from edgeml.report.language_model import render_language_model

    lm, judge, rows, built, answers, contexts, recipe, work = judged

    def pick(fp16_increase: float, int4_increase: float, int4_rate: float) -> dict:
        fp16, int4 = (dataclasses.replace(r) for r in rows)
        fp16.metrics = {**fp16.metrics, "ppl_increase": fp16_increase}
        int4.metrics = {**int4.metrics, "ppl_increase": int4_increase}
        fp16.predicted = {**fp16.predicted, "decode_tokens_per_s": 100.0}
        int4.predicted = {**int4.predicted, "decode_tokens_per_s": int4_rate}
        return _select([fp16, int4], recipe.max_ppl_increase)

    tied = pick(0.001, 0.01, 101.0)                   # within 2 %: the lower increase wins
    assert tied["candidate"] == "tensorrt-edgellm-fp16" and "tied" in tied["reason"]
    assert pick(0.01, 0.001, 101.0)["candidate"] == "tensorrt-edgellm-int4-awq"
    assert pick(0.001, 0.001, 101.0)["candidate"] == "tensorrt-edgellm-fp16"     # then the simpler precision
    assert pick(0.001, 0.01, 150.0)["candidate"] == "tensorrt-edgellm-int4-awq"  # faster beyond 2 %
    fp16, int4 = (dataclasses.replace(r) for r in rows)
    int4.predicted = {**int4.predicted, "decode_tokens_per_s": 150.0}

    run = _new_run(recipe, {"model": str(lm.given)}, 2, lm, default_calibration(), default_evaluation())
    run.rows, run.selection = [fp16, int4], _select([fp16, int4], recipe.max_ppl_increase)
    run.data["bandwidth_bytes_per_s"] = 1e10      # measured by a whole run; none is timed here
    bundle = tmp_path / "bundle"
    write_language_model_bundle(bundle, built[int4.name], int4, run, [], judge.questions, answers[int4.name],
                                [], 32, contexts[int4.name])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"] == "tensorrt-edgellm" and "speed" not in manifest
    assert manifest["predicted"]["decode_tokens_per_s"] == 150.0 and manifest["device_build"] == "model/build_engine.sh"
    done = subprocess.run([sys.executable, str(bundle / "run.py"), "--verify"], capture_output=True, text=True)
    assert done.returncode == 2 and "build its engine there with model/build_engine.sh" in done.stderr
    verified = edgeml_cli("verify", bundle)           # judged again here, on the INT4-rounded weights
    assert verified.exit_code == 0, verified.output
    assert "4/4 greedy answers reproduced" in verified.output and "runs this build on the device" in verified.output
    report = render_language_model(run.to_dict())
    assert "150.0 (predicted)" in report and "Predicted for NVIDIA Jetson Orin Nano 8GB" in report


@pytest.mark.parametrize("target, profile, skipped", [
    ("jetson", "jetson-orin-nano", []),
    ("jetson", "jetson-xavier-nx", ["fp16", "int4"]),   # TensorRT Edge-LLM builds for Orin and Thor only
    ("gpu", "nvidia-t4", ["int4"]),                     # TensorRT-LLM's INT4 AWQ needs compute capability 8.0
    ("gpu", "nvidia-h100", []),
])
def test_a_device_that_cannot_run_an_engine_skips_it_and_says_why(target, profile, skipped):
    from edgeml.targets import get_target

    device = load_profile(profile)
    reasons = {c.precision: c.on_device.unsuited(device) for c in get_target(target).language_models}
    assert sorted(p for p, why in reasons.items() if why) == skipped
    assert all(device.display_name in why and "compute capability" in why for why in reasons.values() if why)


def test_the_gpu_hand_off_builds_with_tensorrt_llm():
    from edgeml.targets.llm_tensorrt import tensorrt_llm_script

    fp16, int4 = (tensorrt_llm_script(q, 1024, 2048) for q in ("fp16", "int4_awq"))
    assert "--qformat full_prec" in fp16 and "--qformat int4_awq --awq_block_size 128" in int4
    assert all("trtllm-build --checkpoint_dir trtllm-checkpoint" in s and "--max_seq_len 2048" in s
               for s in (fp16, int4))
