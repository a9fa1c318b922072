"""edgeml: compress, compile, measure and bundle trained models for deployment targets."""

__version__ = "0.1.0"

from edgeml.pipeline.optimize import optimize  # noqa: E402

__all__ = ["optimize", "__version__"]
