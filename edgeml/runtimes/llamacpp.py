"""llama.cpp (through llama-cpp-python): a GGUF file run by llama.cpp's own CPU kernels, its KV cache allocated for
the context length its build chose (SETTINGS beside the model).

`stream` decodes one token per `llama_decode`, as llama.cpp's own tools do; `logits` opens a second context that
keeps every position's logits (that buffer, context x vocabulary floats, is what a device never allocates).

A llama.cpp built for a CPU with AMX puts quantized weights in its AMX buffer, whose matrix product segfaults on a
prompt of more than a few tokens (llama.cpp issue 20824; seen here on a Xeon with AMX): such a build is opened
without its extra buffer types, so its AVX-512 kernels run instead.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from edgeml.errors import EdgemlError
from edgeml.runtimes.generation import greedy

MODEL = "model.gguf"
SETTINGS = "llama_cpp.json"           # {"n_ctx": the KV cache's length in tokens}


def open_model(folder: Path, threads: int, n_ctx: int, logits_all: bool = False):
    """llama_cpp.Llama on the build in `folder`, quiet, on `threads` threads (0: llama.cpp's default)."""
    from llama_cpp import Llama

    threads = threads or None
    with _without_amx_buffers():
        return Llama(str(Path(folder) / MODEL), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512),
                     n_threads=threads, n_threads_batch=threads, logits_all=logits_all, verbose=False)


@contextlib.contextmanager
def _without_amx_buffers():
    """Models loaded meanwhile skip the extra buffer types (AMX, repacked weights) if llama.cpp was built with AMX:
    llama_cpp.Llama takes no model parameter for it, so the defaults it starts from say so."""
    import llama_cpp.llama_cpp as api

    default = api.llama_model_default_params
    if b"AMX_INT8 = 1" not in api.llama_print_system_info():
        yield
        return

    def params():
        chosen = default()
        chosen.use_extra_bufts = False
        return chosen

    api.llama_model_default_params = params
    try:
        yield
    finally:
        api.llama_model_default_params = default


class LlamaCppGenerator:
    def __init__(self, folder: Path, threads: int):
        self.folder, self.threads = Path(folder), threads
        self.max_length = json.loads((self.folder / SETTINGS).read_text())["n_ctx"]
        self.model = open_model(self.folder, threads, self.max_length)
        self._scorer = None

    def _fits(self, n: int) -> None:
        if n > self.max_length:
            raise EdgemlError(f"{n} tokens do not fit this build's KV cache of {self.max_length}")

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        self._fits(len(ids))
        if self._scorer is None or self._scorer.n_ctx() < len(ids):
            self._scorer = open_model(self.folder, self.threads, len(ids), logits_all=True)
        self._scorer.reset()
        self._scorer.eval(list(ids))
        return np.array(self._scorer.scores[:len(ids)], dtype=np.float32)

    def stream(self, ids: Sequence[int], max_new_tokens: int, stop: Collection[int] = ()) -> Iterator[int]:
        import llama_cpp

        self._fits(len(ids))
        model = self.model
        vocab = model.n_vocab()

        def last() -> np.ndarray:
            return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, -1), shape=(vocab,))

        model.reset()
        model.eval(list(ids))
        yield from greedy(last, lambda token: model.eval([token]), min(max_new_tokens, self.max_length - len(ids)),
                          stop)


def open_generator(folder: Path, threads: int) -> LlamaCppGenerator:
    return LlamaCppGenerator(folder, threads)
