"""A Hugging Face causal LM in PyTorch eager mode, FP32: the reference every language-model build is judged and
timed against."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from edgeml.runtimes.generation import greedy


def quiet_transformers() -> None:
    """No progress bars from transformers (loading weights, reading GGUF): edgeml reports its own steps. Nor the
    warnings torchao logs when transformers imports it (its GPU kernels missing on a CPU machine, a deprecation in
    how it registers types with torch)."""
    import logging as python_logging

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    for name in ("torchao", "torch.utils._pytree"):
        python_logging.getLogger(name).setLevel(python_logging.ERROR)


class TransformersGenerator:
    def __init__(self, folder: Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        quiet_transformers()
        torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([list(ids)]), use_cache=False)
        return out.logits[0].float().numpy()

    def stream(self, ids: Sequence[int], max_new_tokens: int, stop: Collection[int] = ()) -> Iterator[int]:
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        state = {"ids": torch.tensor([list(ids)])}

        def step() -> np.ndarray:
            with torch.inference_mode():
                out = self.model(input_ids=state["ids"], cache=cache, use_cache=True, logits_to_keep=1)
            return out.logits[0, -1].float().numpy()

        def feed(token: int) -> None:
            state["ids"] = torch.tensor([[token]])

        return greedy(step, feed, max_new_tokens, stop)


def open_generator(folder: Path, threads: int) -> TransformersGenerator:
    return TransformersGenerator(folder, threads)
