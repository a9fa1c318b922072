"""The bundle being served: checked as `edgeml verify` checks it, loaded once with its own runtime, and
run by one worker thread, so that runtime calls never overlap (no runtime's session is assumed
thread-safe).

With micro-batching (max_batch > 1, a model whose batch dimension is dynamic) the worker takes the
requests queued within max_wait of the first, up to max_batch samples of the same shape, runs them in
one call and hands each request its rows back.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeml.batching import batch_axes, batched, model_batch
from edgeml.bundle.folder import Bundle
from edgeml.bundle.verify import verify
from edgeml.errors import EdgemlError
from edgeml.serve.decode import InputSpec


@dataclass
class _Job:
    feeds: dict[str, np.ndarray]
    count: int
    key: tuple                                   # the shapes after the sample axis: jobs run together only if equal
    future: Future = field(default_factory=Future)


class ServedModel:
    """A checked, loaded bundle; `submit` queues named inputs and returns a Future of the outputs' list."""

    def __init__(self, bundle: Bundle, threads: int, max_batch: int, max_wait_s: float,
                 on_batch: Callable[[int, float], None]):
        self.bundle = bundle
        self.inputs = [InputSpec.of(s) for s in bundle.manifest["inputs"]]
        self.outputs = [s["name"] for s in bundle.manifest["outputs"]]
        axes = batch_axes(bundle.manifest["inputs"])
        fixed = model_batch([s.shape for s in self.inputs], [s.batch_axis for s in self.inputs])
        if max_batch > 1 and fixed is not None:
            raise EdgemlError(f"--max-batch {max_batch} needs a model with a dynamic batch dimension; this bundle's "
                              f"is fixed to {fixed}: leave --max-batch out")
        if all(s.batch_axis is None for s in self.inputs):
            raise EdgemlError("no input of this bundle has a batch axis to serve requests' samples on")
        self.max_batch, self.max_wait_s, self.on_batch = max_batch, max_wait_s, on_batch
        self._once = [s.name for s in self.inputs if s.batch_axis is None]
        self._run = batched(bundle.open_runner(threads).run, fixed, fixed is not None, axes)
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="edgeml-serve-runtime", daemon=True)
        self._worker.start()

    @classmethod
    def load(cls, folder: Path, threads: int, max_batch: int = 1, max_wait_s: float = 0.002,
             on_batch: Callable[[int, float], None] = lambda samples, seconds: None) -> ServedModel:
        """Verify the bundle (manifest, files, reference vectors with its own runtime) and load it; a one-line
        EdgemlError when it cannot be served."""
        folder = Path(folder)
        if not folder.is_dir():
            raise EdgemlError(f"{folder} is not a bundle folder: give OUT/bundle of `edgeml optimize` (extract an "
                              "archive of `edgeml pack` first)")
        result = verify(folder, threads)
        if not result.passed:
            failed = [c for c in result.checks if not c.passed]
            raise EdgemlError(f"{folder} failed its checks, not serving it: "
                              + "; ".join(f"{c.name}: {c.detail}" for c in failed))
        bundle = Bundle.open(folder)
        if result.not_run or result.checked_with:        # its own runtime is not installed here
            runtime = bundle.runtime
            raise EdgemlError(f"cannot serve {folder}: {runtime.name} is not installed here ({runtime.install})")
        return cls(bundle, threads, max_batch, max_wait_s, on_batch)

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    def submit(self, feeds: dict[str, np.ndarray]) -> Future:
        first = next(iter(feeds.values()))
        # an input without a batch axis holds one value for the whole call: only requests that agree on it share one
        job = _Job(feeds, len(first), tuple(a.shape[1:] for a in feeds.values())
                   + tuple(feeds[name][0].tobytes() for name in self._once))
        self._queue.put(job)
        return job.future

    def _work(self) -> None:
        pending: deque[_Job] = deque()          # a job that did not fit the last batch starts the next one
        while True:
            jobs = [pending.popleft() if pending else self._queue.get()]
            count, deadline = jobs[0].count, time.perf_counter() + self.max_wait_s
            while self.max_batch > 1 and count < self.max_batch and not pending:
                try:
                    job = self._queue.get(timeout=max(deadline - time.perf_counter(), 0))
                except queue.Empty:
                    break
                if job.key == jobs[0].key and count + job.count <= self.max_batch:
                    jobs.append(job)
                    count += job.count
                else:
                    pending.append(job)
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]   # drop those given up on
            if jobs:
                self._run_together(jobs)

    def _run_together(self, jobs: list[_Job]) -> None:
        feeds = jobs[0].feeds if len(jobs) == 1 else {
            name: np.concatenate([job.feeds[name] for job in jobs]) for name in jobs[0].feeds}
        start = time.perf_counter()
        try:
            outputs = self._run(feeds)
        except Exception as e:  # the runtimes raise many kinds; the request fails, the server goes on
            for job in jobs:
                job.future.set_exception(e)
            return
        self.on_batch(sum(job.count for job in jobs), time.perf_counter() - start)
        splits = np.cumsum([job.count for job in jobs])[:-1]
        parts = [np.split(output, splits) for output in outputs]
        for i, job in enumerate(jobs):
            job.future.set_result([part[i] for part in parts])
