"""A time limit on each build, so that one candidate stuck in a long step (a quantizer calibrating step by step for
hours) ends as `failed: time limit (...)` and the other candidates still finish.

The limit is a SIGALRM timer: its handler raises `TimeLimit` in the main thread at the next Python bytecode, which
interrupts a library's loop of calls; one long native call ends first. The timer repeats every second until the
build returns, so a library that catches `Exception` and carries on is interrupted again. Signals reach the main
thread only: elsewhere (a build run from a worker thread) no limit applies.

A finalizer (`__del__`, run by the garbage collector wherever an allocation triggers it) is never interrupted:
there the exception would be ignored anyway, and a runtime's object torn down halfway can crash the process
later. Garbage is collected before the timer starts, and the next alarm, a second later, ends the build.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import signal
import threading
from collections.abc import Callable, Iterator

REPEAT_S = 1.0      # the timer fires again this often after the limit, until the build gives up


class TimeLimit(Exception):
    """A build ran past its limit; its message is the row's reason."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeLimit inside the block once it has run `seconds`. Nested limits keep the outer one."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def expire(signum, frame):
        if _in_finalizer(frame):
            return
        raise TimeLimit(f"time limit ({seconds:g} s, the tuning budget): {what} did not finish")

    gc.collect()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, REPEAT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def limited(build: Callable, seconds: float) -> Callable:
    """`build(candidate, folder, context, ...)` run under `time_limit(seconds)`."""
    @functools.wraps(build)
    def run(candidate, *args, **kwargs):
        with time_limit(seconds, f"the build of {candidate.name}"):
            return build(candidate, *args, **kwargs)
    return run
