"""Compression passes. Each pass is a module with a config dataclass and a `run` function;
what it supports is declared next to it as `SUPPORTS`. torch_passes.py applies them to a PyTorch
source model (edgeml.inputs.models.SourceModel) for the pipeline and the targets."""
