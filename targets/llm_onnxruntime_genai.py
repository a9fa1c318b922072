"""Language-model builds for ONNX Runtime GenAI, made by its model builder (`onnxruntime_genai.models.builder`):
FP32, INT8 and INT4 weights in MatMulNBits (with INT8 activations in the products, its CPU default), and INT4 by
k-quant with the most sensitive layers and the LM head in INT8 (the mixed strategy llama.cpp uses).

The builder runs in its own process: it prints a line for every weight, and a model it cannot take ends it with an
exception whose last line the report gives as the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgeml.targets.base import BuildRefused, LanguageModelBuild, LanguageModelCandidate

BUILDER = "onnxruntime_genai.models.builder"


def builder_command(source: Path, out: Path, precision: str, cache: Path, options: dict[str, str]) -> list[str]:
    """The model builder's command line (as `make bench-llm` also runs it for the runtime's own recipe)."""
    command = [sys.executable, "-m", BUILDER, "-i", str(source), "-o", str(out), "-p", precision, "-e", "cpu",
               "-c", str(cache)]
    if options:
        command += ["--extra_options", *(f"{k}={v}" for k, v in options.items())]
    return command


def run_builder(command: list[str], log: Path, out: Path) -> None:
    """Run the builder with its output in `log`; BuildRefused with its last line if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("a") as stream:
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        raise BuildRefused(f"onnxruntime-genai model builder: {last_line(log)}")


def last_line(log: Path) -> str:
    """The last non-empty line of a log (an exception's message), shortened."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return (lines[-1] if lines else "failed without a message")[:300]


def _build(precision: str, options: dict[str, str]):
    def build(source: Path, out: Path, context: LanguageModelBuild) -> None:
        run_builder(builder_command(source, out, precision, out.parent / f"{out.name}-cache", options),
                    context.log, out)
    return build


def _candidate(name: str, precision: str, method: str, options: dict[str, str] | None = None):
    return LanguageModelCandidate(name, "onnxruntime-genai", precision, _build(precision, options or {}),
                                  method=method, needs=("transformers",), own_process=True)


ORT_GENAI_LANGUAGE_MODELS = (
    _candidate("onnxruntime-genai-fp32", "fp32", "model builder, FP32 weights"),
    _candidate("onnxruntime-genai-int8", "int8", "model builder, INT8 weights (RTN, blocks of 32), INT8 activations"),
    _candidate("onnxruntime-genai-int4", "int4", "model builder's default INT4: RTN, blocks of 32, INT8 activations"),
    _candidate("onnxruntime-genai-int4-kquant", "int4",
               "model builder INT4 by k-quant, the LM head and the most sensitive layers in INT8",
               {"algo_config": "k_quant_mixed"}),
)
