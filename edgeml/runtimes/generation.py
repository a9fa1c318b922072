"""The runner contract of generative language models: a prefill + decode loop with a KV cache, not one call.

A `Generator` is a built language model opened on one runtime. Every runtime takes token ids (the one tokenizer
of the source model makes them, so that every build is judged on the same tokens) and gives:

- `logits(ids)`: the next-token logits at every position of `ids`, from an empty cache (one prefill);
  perplexity, top-1 agreement and KL against the original are computed from these;
- `stream(ids, max_new_tokens, stop)`: greedy generation, token by token, as the runtime's own decoding loop
  runs it on the device; time to first token and decode tokens/s are timed around it.

A runtime whose build holds a fixed number of tokens (a static KV cache) also says how many: `max_length`.

`GENERATION_RUNTIMES` names them; each opens a folder its build wrote (`open(folder, threads)`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeml.runtimes.base import missing_modules, package_version


class Generator(Protocol):
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 [len(ids), vocab]: the logits after each prefix of `ids`."""

    def stream(self, ids: Sequence[int], max_new_tokens: int, stop: Collection[int] = ()) -> Iterator[int]:
        """Greedy: the new tokens after `ids`, one at a time, ending after a `stop` token or `max_new_tokens`.
        Closing the iterator early stops the generation."""


@dataclass(frozen=True)
class GenerationRuntime:
    name: str
    modules: tuple[str, ...]         # import names it needs
    extra: str                       # the edgeml extra that installs them
    opener: str                      # "module:function" that opens a folder: (folder, threads) -> Generator

    def missing(self) -> list[str]:
        return missing_modules(self.modules)

    def version(self) -> str | None:
        return package_version(self.modules[0])

    def open(self, folder: Path, threads: int) -> Generator:
        module, function = self.opener.split(":")
        return getattr(importlib.import_module(module), function)(Path(folder), threads)


GENERATION_RUNTIMES: dict[str, GenerationRuntime] = {r.name: r for r in (
    GenerationRuntime("transformers", ("transformers", "torch"), "edgeml[llm]",
                      "edgeml.runtimes.transformers_eager:open_generator"),
    GenerationRuntime("onnxruntime-genai", ("onnxruntime_genai",), "edgeml[llm]",
                      "edgeml.runtimes.onnxruntime_genai:open_generator"),
    GenerationRuntime("openvino-genai", ("openvino_genai", "openvino"), "edgeml[llm]",
                      "edgeml.runtimes.openvino_genai:open_generator"),
    GenerationRuntime("executorch", ("executorch", "torch"), "edgeml[llm]",
                      "edgeml.runtimes.executorch_llm:open_generator"),
    GenerationRuntime("llama-cpp", ("llama_cpp",), "edgeml[llamacpp]", "edgeml.runtimes.llamacpp:open_generator"),
    GenerationRuntime("litert", ("ai_edge_litert",), "edgeml[tflite]", "edgeml.runtimes.litert_llm:open_generator"),
)}


def greedy(step: Callable[[], np.ndarray], feed: Callable[[int], None], max_new_tokens: int,
           stop: Collection[int]) -> Iterator[int]:
    """The decoding loop of runtimes that give logits: pick the most likely token, feed it back, until a stop
    token or `max_new_tokens`. `step()` returns the last position's logits."""
    for i in range(max_new_tokens):
        token = int(np.argmax(step()))
        yield token
        if token in stop or i == max_new_tokens - 1:
            return
        feed(token)
