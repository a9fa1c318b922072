"""edgeml: compress, compile, measure and bundle trained models for deployment targets.

`edgeml.optimize` is imported on first use, so that a process that needs only a small part of edgeml (the memory
probe each measured row starts, a bundle's checks) does not import torch and every pass with it.
"""

from edgeml.version import __version__

__all__ = ["optimize", "__version__"]


def __getattr__(name: str):
    if name == "optimize":
        from edgeml.pipeline.optimize import optimize

        return optimize
    raise AttributeError(f"module 'edgeml' has no attribute {name!r}")
