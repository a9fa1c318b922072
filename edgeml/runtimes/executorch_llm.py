"""ExecuTorch: a language model lowered to a .pte program (XNNPACK kernels, its KV cache a buffer inside the program)
run by ExecuTorch's own runtime, the one phones embed.

The program's `forward(tokens [1, n], positions [n])` writes the tokens' keys and values into the cache at those
positions and returns the logits at every one of them; `get_max_seq_len` gives the cache's length (the names
ExecuTorch's LLM runner reads). A sequence that starts again at position 0 overwrites what was cached.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from edgeml.captured_output import logged
from edgeml.errors import EdgemlError, first_line
from edgeml.runtimes.generation import greedy

PROGRAM = "model.pte"


def set_threads(threads: int) -> None:
    """ExecuTorch's one process-wide thread pool (XNNPACK's) gets `threads` threads."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


def register_kernels() -> None:
    """Give ExecuTorch's runtime the kernels of the ops XNNPACK does not take: `llama::custom_sdpa` and the quantized
    embedding (`quantized_decomposed::embedding_byte`). Loading their libraries registers them."""
    import executorch.kernels.quantized  # noqa: F401
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401


class ExecutorchGenerator:
    def __init__(self, folder: Path, threads: int):
        self.forward, self.max_length = _quietly(lambda: _load(Path(folder) / PROGRAM, threads))

    def _run(self, ids: Sequence[int], start: int) -> np.ndarray:
        import torch

        if start + len(ids) > self.max_length:
            raise EdgemlError(f"{start + len(ids)} tokens do not fit this build's KV cache of {self.max_length}")
        tokens = torch.tensor([list(ids)], dtype=torch.long)
        positions = torch.arange(start, start + len(ids), dtype=torch.long)
        return self.forward.execute([tokens, positions])[0][0].numpy()

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        return np.asarray(self._run(ids, 0), dtype=np.float32)

    def stream(self, ids: Sequence[int], max_new_tokens: int, stop: Collection[int] = ()) -> Iterator[int]:
        state = {"last": self._run(ids, 0)[-1], "position": len(ids)}

        def feed(token: int) -> None:
            state["last"] = self._run([token], state["position"])[-1]
            state["position"] += 1

        yield from greedy(lambda: state["last"], feed, min(max_new_tokens, self.max_length - len(ids)), stop)


def _load(program_file: Path, threads: int):
    from executorch.runtime import Runtime

    register_kernels()
    set_threads(threads)
    program = Runtime.get().load_program(str(program_file))
    return program.load_method("forward"), int(program.load_method("get_max_seq_len").execute([])[0])


def _quietly(run: Callable):
    """`run()` with what loading prints (the runtime's C++ log, torchao's warnings as it loads its kernels) kept off
    the console; when it fails, the error names what the log says is missing."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "executorch.log"
        try:
            with logged(log):
                return run()
        except RuntimeError as e:
            missing = [line.split("] ", 1)[-1] for line in log.read_text(errors="replace").splitlines()
                       if "Missing operator" in line]
            raise RuntimeError(f"{first_line(e)}{': ' + missing[0] if missing else ''}") from None


def open_generator(folder: Path, threads: int) -> ExecutorchGenerator:
    return ExecutorchGenerator(folder, threads)
