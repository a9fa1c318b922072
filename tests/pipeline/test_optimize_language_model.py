"""`edgeml optimize` of a causal language model (edgeml.pipeline.language_model): the tiny LM of tests/tiny_lm.py
built by ONNX Runtime GenAI, judged on real prose, timed, selected within the perplexity budget and bundled with a
run.py that reproduces its answers."""

import json
import subprocess
import sys

import pytest

from edgeml.hashing import sha256_file
from edgeml.pipeline.language_model import _select
from edgeml.report.record import Row
from edgeml.runtimes.generation import GENERATION_RUNTIMES


def test_every_int8_build_is_judged_and_timed_against_the_original(lm_run):
    _, report, _ = lm_run
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["original"]["role"] == "reference" and rows["original"]["backend"] == "transformers"
    candidates = [r for r in report["rows"] if r["role"] == "candidate"]
    assert {r["precision"] for r in candidates} == {"int8"}
    missing = {r["name"] for r in candidates if GENERATION_RUNTIMES[r["backend"]].missing()}   # llama.cpp: opt-in
    assert len(candidates) - len(missing) >= 2
    for row in candidates:
        if row["name"] in missing:
            extra = GENERATION_RUNTIMES[row["backend"]].extra
            assert row["status"] == "unavailable" and row["reason"].endswith(f"({extra})"), row
            continue
        assert row["status"] == "ok", row["reason"]
        m = row["metrics"]
        assert m["documents"] == 8 and m["tokens"] > 1000
        assert m["perplexity_ci95"][0] <= m["perplexity"] <= m["perplexity_ci95"][1]
        assert 0.5 < m["top1_agreement"] <= 1 and m["kl"] >= 0
        speed = row["latency"]
        assert speed["decode_tokens_per_s"]["median"] > 0 and speed["ttft_ms"]["128"]["median"] > 0
        assert 0 < speed["fraction_of_floor"]
        assert row["size_bytes"] < rows["original"]["size_bytes"]
        assert row["peak_memory_bytes"] > 0
    assert rows["original"]["peak_memory_bytes"] > 0
    assert report["source"]["architecture"] == "LlamaForCausalLM"
    assert report["data"]["evaluation"]["documents"] == 8 and report["data"]["bandwidth_bytes_per_s"] > 0


def test_the_selected_build_is_the_fastest_within_the_budget(lm_run):
    _, report, _ = lm_run
    selected = [r for r in report["rows"] if r["selected"]]
    assert len(selected) == 1
    within = [r for r in report["rows"] if r["within_budget"]]
    if within:
        fastest = max(within, key=lambda r: r["latency"]["decode_tokens_per_s"]["median"])
        assert selected[0]["name"] == fastest["name"]
    assert report["selection"]["within_budget"] == bool(within)


def test_the_bundle_reproduces_its_answers_with_its_runtime_alone(lm_run):
    out, report, _ = lm_run
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["kind"] == "language-model" and manifest["runtime"] == "onnxruntime-genai"
    assert manifest["build"] == report["selection"]["candidate"]
    for file in manifest["files"]:
        assert sha256_file(bundle / file["path"]) == file["sha256"] and (bundle / file["path"]).stat().st_size == \
            file["size"]
    verify = subprocess.run([sys.executable, "run.py", "--verify"], cwd=bundle, capture_output=True, text=True,
                            timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("4/4 reference answers reproduced")
    generated = subprocess.run([sys.executable, "run.py", "The assert statement", "--max-new-tokens", "8"],
                               cwd=bundle, capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0 and generated.stdout.strip(), generated.stderr


def test_verify_checks_the_files_and_the_answers_and_finds_a_changed_file(lm_run, tmp_path, edgeml_cli):
    import shutil

    out, _, _ = lm_run
    result = edgeml_cli("verify", out / "bundle")
    assert result.exit_code == 0, result.output
    assert "4/4 greedy answers reproduced" in result.stdout and "verified:" in result.stdout
    copy = shutil.copytree(out / "bundle", tmp_path / "bundle")
    with (copy / "model" / "genai_config.json").open("a") as f:
        f.write(" ")
    result = edgeml_cli("verify", copy)
    assert result.exit_code == 1 and "FAILED: model/genai_config.json, reference answers" in result.stdout


def test_ship_copies_the_bundle_and_reproduces_its_answers_where_it_went(lm_run, tmp_path, edgeml_cli):
    out, _, _ = lm_run
    result = edgeml_cli("ship", out / "bundle", "--to", tmp_path / "device", "--verify-remote")
    assert result.exit_code == 0, result.output
    assert "4/4 reference answers reproduced token for token" in result.stdout
    shipped = tmp_path / "device" / "bundle"
    assert sorted(p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file()) == \
        sorted(p.relative_to(out / "bundle").as_posix() for p in (out / "bundle").rglob("*") if p.is_file())


def test_profile_times_the_bundle_where_it_is_and_writes_a_device_report(lm_run, tmp_path, edgeml_cli):
    out, report, _ = lm_run
    device = tmp_path / "device_report.json"
    result = edgeml_cli("profile", out / "bundle", "--threads", "2", "-o", device)
    assert result.exit_code == 0, result.output
    assert "tokens/s (95% CI" in result.stdout and "time to first token" in result.stdout
    timed = json.loads(device.read_text())
    assert timed["kind"] == "language-model" and timed["bundle"]["build"] == report["selection"]["candidate"]
    assert timed["decode_tokens_per_s"]["median"] > 0 and len(timed["ttft_ms"]["values"]) == 12
    assert timed["decode_tokens_per_s"]["ci95"][0] <= timed["decode_tokens_per_s"]["median"]
    merged = edgeml_cli("report", out, "--merge", device)
    assert merged.exit_code == 2 and "error: " in merged.stderr


def test_the_report_shows_the_table_and_how_it_was_measured(lm_run):
    out, report, _ = lm_run
    text = (out / "report.md").read_text()
    assert "| build | runtime | weights |" in text and "decode tok/s" in text
    assert f"**{report['selection']['candidate']}** ✓" in text
    assert "bandwidth" in text and "8 documents" in text
    assert not (out / "work").exists()


def test_edgeml_report_renders_the_record_again(lm_run, edgeml_cli):
    out, _, _ = lm_run
    result = edgeml_cli("report", out)
    assert result.exit_code == 0 and result.stdout == (out / "report.md").read_text()
    result = edgeml_cli("report", out, "--format", "html")
    assert result.exit_code == 2 and result.stderr.startswith("error: the report of a language model is md or json")


def _row(name, increase, se, rate, within):
    return Row(name, "onnxruntime-genai", "int4", "candidate", metrics={"ppl_increase": increase,
                                                                        "ppl_increase_se": se},
               latency={"decode_tokens_per_s": {"median": rate}}, within_budget=within)


def test_selection_takes_the_fastest_within_the_budget_else_the_closest_and_says_so():
    rows = [_row("a", 0.01, 0.005, 90.0, True), _row("b", 0.03, 0.01, 120.0, True), _row("c", 0.2, 0.01, 200.0, False)]
    assert _select(rows, 0.05)["candidate"] == "b" and rows[1].selected
    rows = [_row("a", 0.08, 0.01, 90.0, False), _row("c", 0.2, 0.01, 200.0, False)]
    selection = _select(rows, 0.05)
    assert selection["candidate"] == "a" and not selection["within_budget"]
    assert "no build is within 5.0%" in selection["reason"]


@pytest.mark.parametrize("args, message", [
    (["--weights", "w.pt"], "--weights does not apply to a language model"),
    (["--target", "jetson", "--precision", "int8"], "target 'jetson' builds language models in fp16, int4, not int8"),
    (["--precision", "fp16"], "builds language models in fp32, int4, int8, not fp16"),
])
def test_settings_a_language_model_cannot_take_are_one_line_errors(tiny_lm, tmp_path, edgeml_cli, args, message):
    result = edgeml_cli("optimize", tiny_lm, *args, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_mobile_target_ships_an_executorch_or_litert_build_that_runs_here(tiny_lm, lm_texts, tmp_path):
    """`--target mobile`: the INT4 ExecuTorch build (8-bit activations, 4-bit weights) and the INT4 LiteRT build
    judged, timed, and the faster bundled; its run.py reproduces the answers with its runtime alone. The model has a
    padding token and its LM head tied to the embedding, as SmolLM2 has (a padding index once kept the INT8
    embedding from lowering)."""
    import shutil

    model = shutil.copytree(tiny_lm, tmp_path / "padded")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "pad_token_id": 1, "tie_word_embeddings": True}))
    out = tmp_path / "out"
    calib, evaluation = lm_texts
    done = subprocess.run([sys.executable, "-m", "edgeml", "optimize", str(model), "--target", "mobile",
                           "--precision", "int4", "--calib-data", str(calib), "--eval-data", str(evaluation),
                           "--threads", "2", "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"] if r["role"] == "candidate"}
    assert {name: (r["backend"], r["status"]) for name, r in rows.items()} == {
        "executorch-xnnpack-8da4w": ("executorch", "ok"), "litert-dynamic-int4": ("litert", "ok")}
    for row in rows.values():
        assert 0.5 < row["metrics"]["top1_agreement"] <= 1 and row["latency"]["decode_tokens_per_s"]["median"] > 0
    row = next(r for r in rows.values() if r["selected"])
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["runtime"] == row["backend"] and manifest["target"] == "mobile"
    program = {"executorch": "model.pte", "litert": "model.tflite"}[row["backend"]]
    assert manifest["generation"]["context_length"] == 512 and (out / "bundle" / "model" / program).is_file()
    verify = subprocess.run([sys.executable, "run.py", "--verify"], cwd=out / "bundle", capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0 and verify.stdout.startswith("4/4 reference answers reproduced"), verify.stderr
    assert verify.stderr == ""
    chat = subprocess.run([sys.executable, "run.py", "Name a prime", "--chat", "--max-new-tokens", "4"],
                          cwd=out / "bundle", capture_output=True, text=True, timeout=120)
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr


def test_close_contenders_are_timed_again_in_alternating_rounds(tiny_lm):
    """Two builds within 2x of each other's decode are timed together, a prompt of their own for every call; the
    selection records each round and the speed-up of the fastest with its CI."""
    from pathlib import Path

    from edgeml.inputs.text import default_evaluation
    from edgeml.pipeline.language_model import Judge, Tokens, _contenders, _time_contenders
    from edgeml.progress import Reporter

    judge = Judge(Tokens(tiny_lm), default_evaluation(), 512)
    assert len({tuple(p) for p in judge.contest_prompts}) == len(judge.contest_prompts)
    rows = [_row("a", 0.01, 0.0, 100.0, True), _row("b", 0.0, 0.0, 60.0, True), _row("c", 0.0, 0.0, 40.0, True)]
    for row in rows:
        row.backend = "transformers"
    close = _contenders(rows)
    assert [r.name for r in close] == ["a", "b"]                 # c: more than 2x slower than a
    paired = _time_contenders(close, {"a": Path(tiny_lm), "b": Path(tiny_lm)}, judge, 2, Reporter(), seconds=2)
    assert set(paired) == {"a", "b"} and len(paired["a"]["round_p50_ms"]) >= 5
    selection = _select(rows, 0.05, paired)
    record = selection["paired"]
    assert selection["candidate"] in record["tied"] and record["rounds"] == len(paired["a"]["round_p50_ms"])
    slower = next(name for name in record["rows"] if name != record["fastest"])
    assert record["rows"][slower]["speedup_of_fastest"]["ci95"][0] <= record["rows"][slower]["speedup_of_fastest"][
        "ratio"] and "alternating rounds" in selection["reason"]
    assert _time_contenders(close[:1], {}, judge, 2, Reporter()) is None


def test_a_tie_in_the_rounds_goes_to_the_lower_perplexity_increase():
    import numpy as np

    from edgeml.measure.paired_timing import summarize

    rounds = [np.array([100.0, 101.0]), np.array([99.0, 100.0]), np.array([100.0, 102.0])] * 2
    paired = {"fast": summarize(rounds), "better": summarize([r * 1.01 for r in rounds])}
    rows = [_row("fast", 0.03, 0.005, 110.0, True), _row("better", 0.01, 0.005, 108.0, True)]
    selection = _select(rows, 0.05, paired)
    assert selection["paired"]["fastest"] == "fast" and selection["paired"]["tied"] == ["better", "fast"]
    assert selection["candidate"] == "better" and rows[1].selected
    clearly = {"fast": summarize(rounds), "better": summarize([r * 1.5 for r in rounds])}
    for row in rows:
        row.selected = False
    assert _select(rows, 0.05, clearly)["candidate"] == "fast"
