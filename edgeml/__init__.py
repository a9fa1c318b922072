"""edgeml: compress, compile, measure and bundle trained models for deployment targets."""

__version__ = "0.1.0"
