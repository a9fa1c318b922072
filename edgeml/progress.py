"""Progress display for long steps (rich), and the warnings a run collects.

The CLI shows a live line per step and prints each finished step with its time; the Python
API runs silently but still records the warnings in the run record.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Step:
    def __init__(self, progress: Progress | None, task):
        self._progress, self._task = progress, task
        self.failure: str | None = None
        self.cached = False          # its result was restored from the cache

    def fail(self, reason: str) -> None:
        """Mark the step as failed without stopping the run (shown with a cross)."""
        self.failure = reason

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


class Reporter:
    def __init__(self, console: Console | None = None):
        """With a console, show progress on it; without, stay silent."""
        self.console = console
        self.warnings: list[str] = []
        self.steps: list[dict] = []
        self._progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if self.console is not None and self.console.is_terminal:  # logs and pipes get plain lines
            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                MofNCompleteColumn(), TimeElapsedColumn(), console=self.console, transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @contextmanager
    def step(self, title: str, total: int | None = None) -> Iterator[Step]:
        task = self._progress.add_task(title, total=total) if self._progress else None
        start = time.perf_counter()
        handle = Step(self._progress, task)
        try:
            yield handle
        finally:
            if self._progress is not None:
                self._progress.remove_task(task)
        seconds = time.perf_counter() - start
        self.steps.append({"step": title, "seconds": round(seconds, 3), "failure": handle.failure,
                           "cached": handle.cached})
        if handle.failure:
            self.warnings.append(f"{title}: {handle.failure}")
        if self.console is not None:
            mark = (f"[red]✗[/red] {title}: {handle.failure}" if handle.failure else
                    f"[green]✓[/green] {title}" + (" (cached)" if handle.cached else ""))
            self.console.print(f"{mark} [dim]({seconds:.1f} s)[/dim]")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self.console is not None:
            self.console.print(f"[yellow]warning:[/yellow] {message}")
