"""Quantization-aware distillation: fine-tune a PyTorch model with INT8 fake quantization in the loop against the
float model as teacher, then quantize it with ONNX Runtime's `quantize_static` (QDQ) as usual.

The fake quantization is the one `onnxruntime_backend.static` applies, at the inputs and weights of every Conv
and Linear: weights per output channel, symmetric, max |w| / 127 (64 with `Int8Config.avoid_saturation`);
activations per tensor, asymmetric, 255 steps over [min(0, low), max(0, high)], the range initialised from the
calibration data's minimum and maximum (minmax calibration). What training learns is carried into the float
model that `quantize_static` then sees, so that its ordinary calibration gives the trained quantization back:
- weights end on their INT8 grid (the fake-quantized values), which re-quantize to themselves;
- each learned activation range (LSQ-style: the step size is trained with the weights) becomes a clamp in front
  of its layer, so the calibrated range is the learned one: a range clipped below an outlier stays clipped.
The distillation itself is compress/distill's trainer: label-free (the teacher's outputs) unless the training
data has labels, seeded, best epoch on a held-out split, bounded in time.
Layers named in `Int8Config.exclude` (ONNX node names, which do not map back to modules) stay in float in the
QDQ model but are trained fake-quantized like the others: more noise in training than at run time, never less.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeml.compress.base import Supports
from edgeml.compress.distill.trainer import DistillConfig, DistillResult, EpochCallback, distill, holdout
from edgeml.compress.quantize import Int8Config
from edgeml.compress.quantize import onnxruntime_backend as ort_backend
from edgeml.errors import DataError, EdgemlError
from edgeml.inputs.data import Dataset
from edgeml.inputs.export import Export, export_onnx
from edgeml.inputs.models import SourceModel

# Its input is an nn.Module (module or factory + weights), whose Conv/Linear layers are fine-tuned.
SUPPORTS = Supports(name="qat", input="torch", runtimes=("onnxruntime",), precisions=("int8",),
                    modules=("onnxruntime", "torch"), training=True, labels="optional")

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
ACTIVATION_STEPS = 255                 # signed 8-bit activations, asymmetric: -128..127
RANGE_GAIN = 10.0                      # ranges are exp(RANGE_GAIN * p) times the calibrated one: Adam's steps on p
                                       # then move a range by about RANGE_GAIN * lr of itself, whatever its size


@dataclass(frozen=True)
class QatConfig:
    distill: DistillConfig = DistillConfig(epochs=20, lr=2e-4, patience=5)
    int8: Int8Config = Int8Config()
    validation_fraction: float = 0.1   # of the training data, held out to pick the best epoch
    learn_ranges: bool = True          # train the activation ranges with the weights (else: calibrated, fixed)


@dataclass
class QatResult:
    model: Path                        # the QDQ ONNX model
    tuned: nn.Module                   # the fine-tuned float model it was quantized from (weights on the INT8 grid)
    training: DistillResult
    layers: int                        # Conv/Linear layers fake-quantized in training
    export: Export
    quantizer: str                     # the onnx_attempts attempt that quantized it
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"layers": self.layers, "exporter": self.export.exporter, "quantizer": self.quantizer,
                "training": self.training.to_dict(), "notes": self.notes + self.export.notes,
                "seconds": self.seconds}


def run(source: SourceModel, train: Dataset, calibration: Dataset, output: Path, config: QatConfig = QatConfig(),
        seconds: float | None = None, on_epoch: EpochCallback | None = None) -> Path:
    return quantization_aware(source, train, calibration, output, config, seconds, on_epoch).model


def quantization_aware(source: SourceModel, train: Dataset, calibration: Dataset, output: Path,
                       config: QatConfig = QatConfig(), seconds: float | None = None,
                       on_epoch: EpochCallback | None = None) -> QatResult:
    """Fine-tune `source` with fake INT8 against itself as teacher on `train`, then export and quantize it on
    `calibration` to `output`. `seconds` bounds the training (it stops after the epoch that crosses it); the
    export and quantize_static after it take what a plain INT8 build takes. `on_epoch(epoch, epochs, record)`
    reports each epoch. The source model is not changed."""
    started = time.perf_counter()
    if source.kind not in ("module", "factory") or not isinstance(source.module, nn.Module):
        raise EdgemlError(f"quantization-aware training needs a torch.nn.Module, not a model of kind {source.kind}; "
                          "give the model as a module or as factory + weights")
    if len(calibration) == 0:
        raise DataError(f"quantization-aware training: the calibration data ({calibration.source}) has no samples")
    names = [s.name for s in source.inputs]
    if list(train.inputs) != names or list(calibration.inputs) != names:
        raise DataError(f"quantization-aware training: the data's inputs ({', '.join(train.inputs)}) must be the "
                        f"model's ({', '.join(names)}), in that order")
    # The learned ranges reach the QDQ model as clamps, which minmax calibration reads back exactly.
    int8 = replace(config.int8, calibration_method="minmax")
    teacher = source.module
    model = copy.deepcopy(teacher).eval()
    layers = _layers(model)
    if not layers:
        raise EdgemlError("quantization-aware training: the model has no Conv or Linear layer to quantize")
    ranges = _input_ranges(model, layers, calibration, int8.max_calibration_samples, config.distill.batch_size)
    student = _FakeQuantized(model, int8, ranges)
    if not config.learn_ranges:
        for p in student.activations.parameters():
            p.requires_grad_(False)
    fit, validation = holdout(train, config.validation_fraction, config.distill.seed)
    budget = seconds if config.distill.max_seconds is None or seconds is None else \
        min(seconds, config.distill.max_seconds)
    training = distill(teacher, student, fit, validation, replace(config.distill, max_seconds=budget), on_epoch)
    tuned = training.student.to_float().cpu()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".qat-") as tmp:
        example = {n: train.inputs[n][:2] for n in names}       # holdout made sure there are two
        exported = export_onnx(replace(source, kind="module", module=tuned), Path(tmp) / "tuned.onnx", example)
        outcome = ort_backend.static(exported.path, output, calibration, int8)
    notes = [f"{len(student.activations)} Conv/Linear layer(s) fine-tuned with INT8 fake quantization for "
             f"{len(training.curve)} epoch(s) ({training.stopped}); best epoch {training.best_epoch}: "
             f"{training.metric} {training.initial_validation:.4f} -> {training.best_validation:.4f} "
             "on the held-out split"]
    return QatResult(output, tuned, training, len(student.activations), exported, outcome.attempt, notes,
                     time.perf_counter() - started)


class _WeightQuantizer(nn.Module):
    """Symmetric fake quantization of a weight, per output channel or per tensor (a parametrization: the layer
    sees its output). Per channel, a batch norm ONNX Runtime folds into the layer later scales each output channel
    and its step alike, so the weights stay on their grid."""

    def __init__(self, levels: int, per_channel: bool):
        super().__init__()
        self.levels, self.per_channel = levels, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        dims = list(range(1 if self.per_channel else 0, w.dim()))
        scale = w.detach().abs().amax(dim=dims, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny) / self.levels
        return w + ((w / scale).round().clamp(-self.levels, self.levels) * scale - w).detach()


class _ActivationQuantizer(nn.Module):
    """Per-tensor asymmetric fake quantization over [low, high] (0 always inside), the range learned with a
    straight-through estimate of the rounding (LSQ+); `clamp` gives the float model its learned range."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.register_buffer("low0", torch.tensor(min(low, 0.0)))
        self.register_buffer("high0", torch.tensor(max(high, 0.0)))
        self.low_p = nn.Parameter(torch.zeros(()))
        self.high_p = nn.Parameter(torch.zeros(()))
        self.clamp: tuple[float, float] | None = None     # the learned range, fixed: a plain clamp

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low0 * torch.exp(RANGE_GAIN * self.low_p), self.high0 * torch.exp(RANGE_GAIN * self.high_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clamp is not None:
            return x.clamp(*self.clamp)
        low, high = self.bounds()
        scale = ((high - low) / ACTIVATION_STEPS).clamp_min(torch.finfo(x.dtype).tiny)
        steps = ((x - low) / scale).clamp(0, ACTIVATION_STEPS)
        return (steps + (steps.round() - steps).detach()) * scale + low


class _FakeQuantized(nn.Module):
    """`model` with fake INT8 at its Conv/Linear inputs and weights. Its own submodules stay in eval mode while it
    trains (frozen batch norm statistics, no dropout): the fine-tuning adapts the weights to the quantization,
    not the statistics to new data."""

    def __init__(self, model: nn.Module, int8: Int8Config, ranges: dict[str, tuple[float, float]]):
        super().__init__()
        self.model = model
        self.activations = nn.ModuleDict()
        levels = 64 if int8.avoid_saturation else 127
        for name, layer in _layers(model):
            quantizer = _ActivationQuantizer(*ranges[name]).to(layer.weight.device)
            self.activations[name.replace(".", "/")] = quantizer
            layer.register_forward_pre_hook(_PreHook(quantizer))
            parametrize.register_parametrization(layer, "weight", _WeightQuantizer(levels, int8.per_channel))

    def train(self, mode: bool = True):
        self.training = mode
        self.model.eval()
        self.activations.train(mode)
        return self

    def forward(self, *inputs):
        return self.model(*inputs)

    def to_float(self) -> nn.Module:
        """The fine-tuned model in float: weights on their INT8 grid, each learned activation range a clamp."""
        model = copy.deepcopy(self).model
        for layer in model.modules():
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            for hook in layer._forward_pre_hooks.values():
                if isinstance(hook, _PreHook):
                    hook.quantizer.clamp = tuple(float(b.detach()) for b in hook.quantizer.bounds())
        return model.eval().requires_grad_(False)


class _PreHook:
    """Fake-quantizes a layer's first input (a class, not a closure, so that deep copies keep it)."""

    def __init__(self, quantizer: _ActivationQuantizer):
        self.quantizer = quantizer

    def __call__(self, _module, args):
        return (self.quantizer(args[0]), *args[1:])


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, layer) for name, layer in model.named_modules() if isinstance(layer, LAYERS)]


def _input_ranges(model: nn.Module, layers: list[tuple[str, nn.Module]], data: Dataset, samples: int,
                  batch_size: int) -> dict[str, tuple[float, float]]:
    """(min, max) of each layer's input over the first `samples` samples, as minmax calibration sees them."""
    seen = {name: (math.inf, -math.inf) for name, _ in layers}

    def observer(name):
        def hook(_module, args):
            low, high = seen[name]
            seen[name] = (min(low, float(args[0].min())), max(high, float(args[0].max())))
        return hook

    device = layers[0][1].weight.device
    handles = [layer.register_forward_pre_hook(observer(name)) for name, layer in layers]
    try:
        with torch.no_grad():
            count = min(len(data), samples)
            for start in range(0, count, batch_size):
                model(*[torch.from_numpy(np.ascontiguousarray(v[start:min(start + batch_size, count)])).to(device)
                        for v in data.inputs.values()])
    finally:
        for handle in handles:
            handle.remove()
    return {name: (low, high) if low <= high else (0.0, 0.0) for name, (low, high) in seen.items()}
