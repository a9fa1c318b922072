"""Errors a user can cause and fix.

Everything raised from this family is printed by the CLI as one line and exits with code 2, as
does an OSError for a full disk; any other exception is an internal error (exit code 1).
"""

import errno
import re


class EdgemlError(Exception):
    """A problem with the user's input, environment or request; the message says what to do."""


class ModelError(EdgemlError):
    """The model file or factory cannot be loaded, or does not describe its inputs."""


class InputSpecError(EdgemlError):
    """An --input-shape is malformed or disagrees with the model."""


class DataError(EdgemlError):
    """Calibration or evaluation data is missing, malformed, or does not fit the model."""


class TargetError(EdgemlError):
    """An unknown target, or a target that cannot serve the request on this machine."""


class ExportError(EdgemlError):
    """A PyTorch model could not be exported to ONNX, or the export disagrees with PyTorch."""


class OutputError(EdgemlError):
    """The output folder cannot be written."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (colour codes removed)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(e).__name__

# OSError numbers of a full disk, a full quota or a file size limit: the user's to fix (exit 2).
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
