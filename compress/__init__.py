"""Compression passes: quantize/ (post-training quantization, one module per quantizer backend, and
quantization-aware distillation), prune/ and distill/.

Each pass declares what it takes, makes and needs in one record type, a `SUPPORTS` of its module
(base.Supports): the quantizers, registered in quantize.QUANTIZERS, as well as qat, prune and distill.
torch_passes.py applies them to a PyTorch source model (edgeml.inputs.models.SourceModel) for the pipeline and the
targets.
"""
