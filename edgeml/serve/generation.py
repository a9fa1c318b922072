"""A language-model bundle loaded for `edgeml serve`: its tokenizer, its runtime's Generator run by one worker
thread (one generation at a time; no runtime is assumed thread-safe), a bounded queue of the requests waiting for
it, and each generation's tokens handed to the event loop as they come.

A `Job` is one generation: the worker puts its tokens on an asyncio queue, the response reads them (`async for`)
and calls `cancel()` when it ends, however it ends; the worker then closes the runtime's token iterator, which
stops the generation (a job cancelled while it waits never starts).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from edgeml.bundle.folder import Bundle
from edgeml.bundle.language_model import MANIFEST_VERSION
from edgeml.errors import EdgemlError, first_line
from edgeml.serve.app import HttpMetrics
from edgeml.serve.decode import RequestError
from edgeml.serve.openai_api import Completion

KIND = "language-model"
TTFT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKENS_PER_S = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_DONE = object()


class GenerationMetrics(HttpMetrics):
    """/metrics of a language-model server: the HTTP counters and the generations' speed and queue."""

    def __init__(self):
        super().__init__()
        self.ttft = Histogram("edgeml_serve_time_to_first_token_seconds", "From a completion request's arrival "
                              "(queue wait included) to its first generated token", buckets=TTFT_SECONDS,
                              registry=self.registry)
        self.decode_rate = Histogram("edgeml_serve_decode_tokens_per_second", "Tokens per second of one generation "
                                     "after its first token", buckets=TOKENS_PER_S, registry=self.registry)
        self.generated = Counter("edgeml_serve_generated_tokens", "Tokens generated (a stopped generation's too)",
                                 registry=self.registry)
        self.prompt = Counter("edgeml_serve_prompt_tokens", "Prompt tokens of the generations started",
                              registry=self.registry)
        self.queue = Gauge("edgeml_serve_queue_length", "Requests waiting for the generator (one generation runs "
                           "at a time)", registry=self.registry)


def is_language_model(folder: Path) -> bool:
    """Whether FOLDER's manifest says it holds a language model (anything unreadable is left to the other path)."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") == KIND


@dataclass
class Job:
    """One generation: its prompt's ids, its token limit and the request's arrival (time.perf_counter)."""
    ids: list[int]
    max_new: int
    arrived: float
    loop: asyncio.AbstractEventLoop
    tokens: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    count: int = 0                      # tokens generated
    finish: str = "length"              # "stop": the model ended it (a stop token) before max_new

    def put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.tokens.put_nowait, item)
        except RuntimeError:            # the event loop is closed: the server stopped, nobody reads on
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()

    def __aiter__(self):
        return self

    async def __anext__(self) -> int:
        item = await self.tokens.get()
        if item is _DONE:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return item


class LanguageModel:
    """A language-model bundle opened with its runtime, its tokenizer and generation settings."""

    def __init__(self, folder: Path, manifest: dict, tokenizer, generator, max_queue: int,
                 metrics: GenerationMetrics):
        self.folder, self.manifest, self.tokenizer, self.generator = folder, manifest, tokenizer, generator
        self.name, self.metrics, self.max_queue = manifest["name"], metrics, max_queue
        settings = manifest["generation"]
        self.context, self.default_max = settings["context_length"], settings["max_new_tokens"]
        self.stop = frozenset(settings["eos_token_ids"])
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="edgeml-serve-generate")
        self._lock = threading.Lock()
        self._pending = self._waiting = 0           # submitted and not finished / not started

    @classmethod
    def load(cls, folder: Path, threads: int, max_queue: int, metrics: GenerationMetrics) -> LanguageModel:
        """Open the bundle; a one-line EdgemlError when its manifest or model cannot be served, or a file it lists
        with a sha256 is missing or changed."""
        from edgeml.runtimes.generation import GENERATION_RUNTIMES

        folder = Path(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        settings = manifest.get("generation")
        where = f"{folder / 'manifest.json'}"
        if manifest.get("manifest_version") != MANIFEST_VERSION:
            raise EdgemlError(f"{where} has format {manifest.get('manifest_version')}; this edgeml serves "
                              f"language-model bundles of format {MANIFEST_VERSION}: rebuild it with `edgeml optimize`")
        if not isinstance(manifest.get("files"), list) or not all(isinstance(f, dict) and {"path", "sha256"} <= f.keys()
                                                                  for f in manifest["files"]):
            raise EdgemlError(f'{where} needs "files": the list of {{"path", "sha256", "size"}} of the bundle\'s files')
        if not isinstance(manifest.get("name"), str) or not isinstance(manifest.get("model"), str):
            raise EdgemlError(f"{where} needs a model name (\"name\") and its folder (\"model\")")
        if not isinstance(settings, dict) or not all(_positive(settings.get(k)) for k in ("context_length",
                                                                                          "max_new_tokens")) \
                or not isinstance(settings.get("eos_token_ids"), list) \
                or not all(_positive(t) or t == 0 for t in settings["eos_token_ids"]):
            raise EdgemlError(f'{where} needs "generation": {{"context_length": N, "max_new_tokens": N, '
                              '"eos_token_ids": [ids]}')
        runtime = GENERATION_RUNTIMES.get(manifest.get("runtime"))
        if runtime is None and "device_build" in manifest:
            raise EdgemlError(f"cannot serve {folder} here: {manifest['runtime']} runs it on the device; build its "
                              f"engine there with {manifest['device_build']} and serve it with that runtime")
        if runtime is None:
            raise EdgemlError(f"{where}: unknown runtime {manifest.get('runtime')!r}; language models run on "
                              f"{', '.join(GENERATION_RUNTIMES)}")
        if runtime.missing():
            raise EdgemlError(f"cannot serve {folder}: {runtime.name} is not installed here (pip install "
                              f"'{runtime.extra}')")
        changed = [c.path for c in Bundle(folder, manifest).check_files() if not c.ok]
        if changed:
            raise EdgemlError(f"{folder} failed its checks, not serving it: {', '.join(changed[:5])} missing or "
                              "changed since it was bundled")
        model = folder / manifest["model"]
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model))
            generator = runtime.open(model, threads)
        except Exception as e:  # the runtimes and tokenizers raise many kinds on a missing or corrupt model
            raise EdgemlError(f"cannot open {model} with {runtime.name}: {first_line(e)}") from None
        return cls(folder, manifest, tokenizer, generator, max_queue, metrics)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def prompt(self, request: Completion) -> list[int]:
        """The prompt's token ids: the messages through the model's chat template, or the prompt text."""
        if request.chat:
            try:
                text = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True,
                                                          tokenize=False)
            except Exception as e:  # jinja's errors (a template's raise_exception) and a model without a template
                raise RequestError(400, "bad_messages", f"the chat template refused the messages: {first_line(e)}") \
                    from None
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(request.prompt)["input_ids"]
        if not ids:
            raise RequestError(400, "empty_prompt", "the prompt has no tokens")
        return ids

    def max_new_tokens(self, request: Completion, prompt_tokens: int) -> int:
        """The request's max_tokens (default: the bundle's, as far as the context has room); 400 when the prompt
        and max_tokens do not fit the context."""
        room = self.context - prompt_tokens
        if request.max_tokens is None and room >= 1:
            return min(self.default_max, room)
        if request.max_tokens is None or request.max_tokens > room:
            asked = "" if request.max_tokens is None else f" + max_tokens {request.max_tokens}"
            raise RequestError(400, "too_many_tokens", f"the prompt's {prompt_tokens} tokens{asked} exceed the "
                               f"model's context of {self.context} tokens")
        return request.max_tokens

    def submit(self, ids: list[int], max_new: int, arrived: float) -> Job:
        """Queue a generation; 503 when --max-queue requests already wait."""
        job = Job(ids, max_new, arrived, asyncio.get_running_loop())
        with self._lock:
            if self._pending > self.max_queue:
                raise RequestError(503, "queue_full", f"the generator is busy and {self._waiting} requests wait for "
                                   f"it (--max-queue {self.max_queue}): try again later")
            self._pending, self._waiting = self._pending + 1, self._waiting + 1
            self.metrics.queue.set(self._waiting)
        self._worker.submit(self._run, job)
        return job

    def _run(self, job: Job) -> None:
        with self._lock:
            self._waiting -= 1
            self.metrics.queue.set(self._waiting)
        try:
            if not job.cancelled.is_set():
                self._generate(job)
        except Exception as e:  # the runtime failed: this request gets the error, the server goes on
            job.put(e)
        finally:
            with self._lock:
                self._pending -= 1
            job.put(_DONE)

    def _generate(self, job: Job) -> None:
        self.metrics.prompt.inc(len(job.ids))
        first = now = last = None
        tokens = self.generator.stream(job.ids, job.max_new, self.stop)
        try:
            for last in tokens:
                now = time.perf_counter()
                if first is None:
                    first = now
                    self.metrics.ttft.observe(now - job.arrived)
                job.count += 1
                self.metrics.generated.inc()
                job.put(last)
                if job.cancelled.is_set():
                    return
        finally:
            tokens.close()
        if job.count > 1 and now > first:
            self.metrics.decode_rate.observe((job.count - 1) / (now - first))
        job.finish = "stop" if last in self.stop or job.count < job.max_new else "length"


def _positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
