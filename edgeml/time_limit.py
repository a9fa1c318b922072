"""A time limit on each build, so that one candidate stuck in a long step (a quantizer calibrating step by step for
hours) ends as `failed: time limit (...)` and the other candidates still finish.

A watchdog thread raises `TimeLimit` in the thread that runs the build (CPython's PyThreadState_SetAsyncExc), which
takes effect at its next Python bytecode: that interrupts a library's loop of calls; one long native call ends
first. It is raised again every second until the build returns, so a library that catches `Exception` and carries
on is interrupted again; one that wraps it in an error of its own (torch.export re-raises it as "While executing
...") still ends as the time limit, since any error after the limit is reported as the limit.

No OS signal is sent: a SIGALRM timer did the same, but a signal reaches whichever thread the kernel picks, and in
a process where runtimes had started their own thread pools it crashed the process (a segmentation fault after
hundreds of builds).

A finalizer (`__del__`, run by the garbage collector wherever an allocation triggers it) is not interrupted: there
the exception would be ignored anyway, and a runtime's object torn down halfway can crash the process later; the
watchdog waits for it to return. Garbage is collected before the watchdog starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import sys
import threading
from collections.abc import Callable, Iterator

REPEAT_S = 1.0      # the exception is raised again this often after the limit, until the build gives up
FINALIZER_POLL_S = 0.05


class TimeLimit(Exception):
    """A build ran past its limit; its message is the row's reason."""

    reason = "time limit"

    def __str__(self) -> str:
        return super().__str__() or self.reason


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    """Schedule `exception` in the thread `thread_id` (None: cancel one scheduled and not yet raised)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exception) if exception else None)


_active = threading.local()       # whether this thread runs inside a limit


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeLimit inside the block once it has run `seconds`. Nested limits keep the outer one."""
    if getattr(_active, "on", False):
        yield
        return
    # SetAsyncExc raises a class: the message travels as a class attribute, and is the only one (torch.fx writes
    # "While executing %node" into the args of an exception passing through it).
    expired = type("TimeLimit", (TimeLimit,),
                   {"reason": f"time limit ({seconds:g} s, the tuning budget): {what} did not finish",
                    "__str__": lambda self: self.reason})
    target, done, fired, lock = threading.get_ident(), threading.Event(), threading.Event(), threading.Lock()

    def watch() -> None:
        wait = seconds
        while not done.wait(wait):
            with lock:
                if done.is_set():
                    return
                if _in_finalizer(sys._current_frames().get(target)):
                    wait = FINALIZER_POLL_S
                    continue
                fired.set()         # before the exception: the thread may handle it before this one runs again
                _raise_in(target, expired)
            wait = REPEAT_S

    gc.collect()
    watcher = threading.Thread(target=watch, name="edgeml-time-limit", daemon=True)
    _active.on = True
    watcher.start()
    try:
        yield
    except Exception as e:
        if fired.is_set() and not isinstance(e, TimeLimit):
            raise expired() from e
        raise
    finally:
        while True:        # an exception scheduled just before the block ended must not escape past this
            try:
                with lock:
                    done.set()
                    _raise_in(target, None)
                watcher.join()
                _active.on = False
                break
            except TimeLimit:
                continue


def limited(build: Callable, seconds: float) -> Callable:
    """`build(candidate, folder, context, ...)` run under `time_limit(seconds)`."""
    @functools.wraps(build)
    def run(candidate, *args, **kwargs):
        with time_limit(seconds, f"the build of {candidate.name}"):
            return build(candidate, *args, **kwargs)
    return run
