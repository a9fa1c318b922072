"""Output that libraries print, by Python or by their C++ code, sent to a file instead of the console."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def logged(path: Path) -> Iterator:
    """Everything written to stdout and stderr, by Python or by the libraries' C++ code, goes to `path`.

    Python's sys.stdout and sys.stderr become streams on file descriptors 1 and 2 (which point at the log meanwhile),
    never on the log itself: a logging handler that a library creates meanwhile keeps its stream after the log is
    closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with path.open("a") as log:
        saved = os.dup(1), os.dup(2)
        streams = [open(fd, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False) for fd in (1, 2)]
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(streams[0]), contextlib.redirect_stderr(streams[1]), \
                    warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = functools.partial(_log_warning, streams[1])
                yield streams[1]
        finally:
            for stream in streams:
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _log_warning(log, message, category, filename, lineno, file=None, line=None) -> None:
    log.write(warnings.formatwarning(message, category, filename, lineno, line))
