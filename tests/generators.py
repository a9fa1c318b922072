"""What every runtime's language-model generator must do (edgeml.runtimes.generation.Generator)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys


def check_greedy_stream(generator, prompt: list[int]) -> list[int]:
    """The stream after `prompt` is greedy decoding (each token the argmax of logits() over the sequence so far) and
    ends after a stop token; returns its first 6 tokens."""
    expected, sequence = [], list(prompt)
    for _ in range(6):
        expected.append(int(generator.logits(sequence)[-1].argmax()))
        sequence.append(expected[-1])
    tokens = list(generator.stream(prompt, 6))
    assert tokens == expected
    stop = tokens[3]
    assert list(generator.stream(prompt, 6, stop={stop})) == tokens[:tokens.index(stop) + 1]
    return tokens


def check_run_py(build, runtime: str, generator, prompts: list[list[int]], bundle) -> None:
    """The bundle's run.py, given `build` (a folder of `runtime`) alone, reproduces `generator`'s greedy tokens
    after `prompts` (--verify), and generates from text with nothing on stderr."""
    from edgeml.bundle.standalone_generate import RUN_PY

    shutil.copytree(build, bundle / "model")
    (bundle / "manifest.json").write_text(json.dumps({"runtime": runtime, "model": "model", "generation": {
        "eos_token_ids": [0], "max_new_tokens": 8}}))
    (bundle / "reference.json").write_text(json.dumps({"prompt_ids": prompts, "max_new_tokens": 8, "output_ids": [
        list(generator.stream(p, 8, {0})) for p in prompts]}))
    (bundle / "run.py").write_text(RUN_PY)
    verify = subprocess.run([sys.executable, "run.py", "--verify"], cwd=bundle, capture_output=True, text=True,
                            timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith(f"{len(prompts)}/{len(prompts)} reference answers reproduced"), verify.stdout
    said = subprocess.run([sys.executable, "run.py", "The assert statement", "--max-new-tokens", "4"], cwd=bundle,
                          capture_output=True, text=True, timeout=120)
    assert said.returncode == 0 and said.stdout.strip() and said.stderr == "", said.stderr
