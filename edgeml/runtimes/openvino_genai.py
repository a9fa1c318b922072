"""OpenVINO GenAI: the decoding loop (KV cache, greedy search) of OpenVINO's LLMPipeline around a stateful OpenVINO IR
of a causal LM (openvino_model.xml, its KV cache kept as model state, beside openvino_tokenizer.xml and
openvino_detokenizer.xml), as edgeml.targets.llm_openvino writes it.

`stream` runs LLMPipeline.generate in a thread and hands its tokens over one at a time; `logits` runs the same IR
with plain OpenVINO (LLMPipeline keeps only the last position's logits).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

_DONE = object()        # the end of a generation, after its last token


def device_properties(threads: int) -> dict:
    """The CPU plugin's settings for every model of a build: its arithmetic in f32, so that a build is judged on its
    weights alone and `stream` generates what `logits` (one prefill, which is what a build is judged on) predicts.

    - INFERENCE_PRECISION_HINT: on CPUs with AMX or AVX512-BF16 OpenVINO computes "f32" in bf16 unless told, and the
      float parts of INT8/INT4-weight models too;
    - DYNAMIC_QUANTIZATION_GROUP_SIZE 0: otherwise the CPU plugin quantizes the activations of the MatMuls with INT8/
      INT4 weights to INT8 on the fly, and differently in LLMPipeline's decode steps than in one prefill (SmolLM2-135M
      INT4: logits up to 4.5 apart, the 5th greedy token different; its decode was ~30% faster);
    - KV_CACHE_PRECISION f32: the CPU default (u8) touches only the decode steps (SmolLM2-135M INT8: the 3rd greedy
      token differed)."""
    return {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
            "KV_CACHE_PRECISION": "f32"}


def prefill_inputs(ids: Sequence[int]) -> dict[str, np.ndarray]:
    """The inputs of the stateful IR for one sequence from an empty cache."""
    n = len(ids)
    return {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)}


class OpenvinoGenaiGenerator:
    def __init__(self, folder: Path, threads: int):
        import openvino_genai as ov_genai

        self.folder = folder
        self.threads = threads
        self.pipeline = ov_genai.LLMPipeline(str(folder), "CPU", **device_properties(threads))

    @functools.cached_property
    def _request(self):
        import openvino as ov

        compiled = ov.Core().compile_model(str(self.folder / "openvino_model.xml"), "CPU",
                                           device_properties(self.threads))
        return compiled.create_infer_request()

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        request = self._request
        request.reset_state()
        request.infer(prefill_inputs(ids))
        return np.array(request.get_tensor("logits").data[0], dtype=np.float32)

    def stream(self, ids: Sequence[int], max_new_tokens: int, stop: Collection[int] = ()) -> Iterator[int]:
        import openvino as ov
        import openvino_genai as ov_genai

        config = self.pipeline.get_generation_config()
        config.max_new_tokens = max_new_tokens
        config.do_sample = False
        config.num_beams = 1
        config.ignore_eos = True          # only `stop` ends a generation; the streamer stops on it
        config.stop_token_ids = set()
        inputs = ov_genai.TokenizedInputs(ov.Tensor(np.asarray([ids], dtype=np.int64)),
                                          ov.Tensor(np.ones((1, len(ids)), dtype=np.int64)))
        return _streamed(lambda streamer: self.pipeline.generate(inputs, config, streamer), set(stop))


def _streamer(tokens: queue.Queue, stop: set[int]):
    """A StreamerBase that puts each new token on `tokens`, stops the generation after a `stop` token and cancels
    it once `cancel` is set."""
    import openvino_genai as ov_genai

    class Streamer(ov_genai.StreamerBase):
        def __init__(self):
            super().__init__()
            self.cancel = threading.Event()

        def write(self, token):
            for t in [token] if isinstance(token, int) else token:
                if self.cancel.is_set():
                    return ov_genai.StreamingStatus.CANCEL
                tokens.put(int(t))
                if t in stop:
                    return ov_genai.StreamingStatus.STOP
            return ov_genai.StreamingStatus.RUNNING

        def end(self):
            pass

    return Streamer()


def _streamed(generate, stop: set[int]) -> Iterator[int]:
    """The tokens `generate(streamer)` writes, from a thread; closing the iterator cancels the generation."""
    tokens: queue.Queue = queue.Queue()
    streamer = _streamer(tokens, stop)

    def run() -> None:
        try:
            generate(streamer)
        except Exception as e:  # handed to the consumer
            tokens.put(e)
        finally:
            tokens.put(_DONE)

    thread = threading.Thread(target=run, name="openvino-genai-generate", daemon=True)
    thread.start()
    try:
        while (item := tokens.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        streamer.cancel.set()
        thread.join()


def open_generator(folder: Path, threads: int) -> OpenvinoGenaiGenerator:
    return OpenvinoGenaiGenerator(folder, threads)
