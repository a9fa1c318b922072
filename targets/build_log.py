"""A build step that runs an exporter in this process (its output in the build's log, edgeml.captured_output):
an exception becomes one line (BuildRefused) for the report, its traceback in the log."""

from __future__ import annotations

import traceback
from collections.abc import Callable

from edgeml.errors import first_line
from edgeml.targets.base import BuildRefused


def refusing(step: str, log, run: Callable):
    """`run()`, or BuildRefused naming `step` and its error (whose traceback goes to the log)."""
    try:
        return run()
    except BuildRefused:
        raise
    except Exception as e:
        traceback.print_exc(file=log)
        raise BuildRefused(f"{step} failed: {first_line(e)}") from e
