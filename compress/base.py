"""What a compression pass declares about itself: one `Supports` record per pass, named `SUPPORTS` in its module.

The targets read a quantizer's record to build their candidates (`modules` as a candidate's `needs`, `calibrations`),
`--quantizer` and `--calibration-method` offer what the records name (edgeml.compress.quantize), and
tests/compress/test_quantizer_registry.py checks every record against the runtimes, the targets, pyproject.toml and
the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeml.compress.quantize.base import Calibration


@dataclass(frozen=True)
class Supports:
    """What a pass takes, makes and needs. The fields after `extra` are abilities some passes have; each quantizer
    ability is a function of its module (edgeml.compress.quantize.base.Quantizer)."""
    name: str                        # a quantizer's: what --quantizer and Candidate.quantizer call it
    input: str                       # what it starts from: "onnx" (the exported model) or "torch" (the PyTorch model)
    runtimes: tuple[str, ...] = ()   # the runtimes (edgeml.runtimes.BACKENDS) that run what it makes; none for a pass
                                     # whose PyTorch model goes on through the pipeline
    precisions: tuple[str, ...] = ()     # the precisions it makes; none where it keeps the model's
    modules: tuple[str, ...] = ()    # the import names it needs (a candidate that uses it needs them)
    extra: str = "edgeml"            # what installs them: "edgeml" or "edgeml[NAME]" (pyproject.toml)
    calibration_methods: tuple[str, ...] = ()    # the Int8Config.calibration_method values it reads
    calibrations: tuple[Calibration, ...] = ()   # its alternatives to its default ranges and corrections, in the
                                                 # order the accuracy-budget search tries them
    dynamic: bool = False            # dynamic INT8 (`dynamic`): activations quantized at run time, no calibration
    weight_only: tuple[int, ...] = ()    # the bit widths of its weight-only compression (`run_weight_only`)
    accuracy_control: bool = False   # its own search for the layers to keep in float (`run_with_accuracy_control`)
    kinds: tuple[str, ...] = ()      # the kinds of a pass that has several (pruning)
    training: bool = False           # fine-tunes on training data
    labels: str = "unused"           # required | optional | unused
