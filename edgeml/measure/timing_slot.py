"""Where timed runs wait their turn: every latency measurement runs inside `held()`.

By default nothing is waited for. A caller that runs several jobs on one machine (edgeml.sweep, on Ray)
installs a guard with `guarded_by(...)`, a context manager factory that returns once this job may time alone
and releases the turn on exit. Nested measurements hold the turn they are inside.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

_guard: Callable[[], AbstractContextManager] | None = None
_depth = threading.local()


@contextmanager
def held() -> Iterator[None]:
    """This block's timed runs hold the machine's timing turn (if a guard is installed)."""
    depth = getattr(_depth, "n", 0)
    if _guard is None or depth:
        yield
        return
    with _guard():
        _depth.n = depth + 1
        try:
            yield
        finally:
            _depth.n = depth


@contextmanager
def guarded_by(guard: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Install `guard` for the timed runs of this process while the block runs."""
    global _guard
    previous, _guard = _guard, guard
    try:
        yield
    finally:
        _guard = previous
