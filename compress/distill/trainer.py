"""Distillation training loop: a student learns the teacher's outputs (and labels, when there are any).

The teacher's outputs are computed once per dataset (the teacher is fixed and in eval mode), so an
epoch costs one student forward and backward pass per batch.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import DataError, EdgemlError, first_line
from edgeml.inputs.data import Dataset, split

EpochCallback = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3                     # Adam
    temperature: float = 4.0             # softens both distributions in the KL term
    alpha: float = 0.7                   # weight of the soft-target term; 1 - alpha on the labels
    patience: int = 5                    # epochs without a better validation metric before stopping
    seed: int = 0
    max_seconds: float | None = None     # stop after the epoch that crosses this budget

    def __post_init__(self):
        checks = [
            (_is_int(self.epochs) and self.epochs >= 1, f"epochs must be a whole number >= 1, got {self.epochs!r}"),
            (_is_int(self.batch_size) and self.batch_size >= 1,
             f"batch_size must be a whole number >= 1, got {self.batch_size!r}"),
            (_is_positive(self.lr), f"lr must be a positive number (Adam's learning rate, e.g. 1e-3), got {self.lr!r}"),
            (_is_positive(self.temperature),
             f"temperature must be a positive number (1 = plain softmax, 4 is common), got {self.temperature!r}"),
            (_is_number(self.alpha) and 0 <= self.alpha <= 1,
             f"alpha is the soft-target weight, a number from 0 to 1, got {self.alpha!r}"),
            (_is_int(self.patience) and self.patience >= 1,
             f"patience must be a whole number of epochs >= 1, got {self.patience!r}"),
            (_is_int(self.seed) and self.seed >= 0, f"seed must be a whole number >= 0, got {self.seed!r}"),
            (self.max_seconds is None or _is_positive(self.max_seconds),
             f"max_seconds must be a positive number of seconds or None (no budget), got {self.max_seconds!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise EdgemlError(f"distillation: {message}")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _is_positive(v) -> bool:
    return _is_number(v) and v > 0


@dataclass
class DistillResult:
    student: nn.Module                   # a trained copy, in eval mode, with the best epoch's weights
    config: DistillConfig
    metric: str                          # what curve[i]["validation"] measures: accuracy | agreement | negative_mse
    initial_validation: float            # the student's metric before training (epoch 0)
    best_validation: float
    best_epoch: int                      # 0: no epoch beat the student as given, which is returned unchanged
    stopped: str                         # early stopping | time budget | all epochs
    label_free: bool                     # trained on the teacher's outputs only
    curve: list[dict] = field(default_factory=list)   # epoch, train_loss, validation(_loss), seconds
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """Everything but the model, for the JSON run record."""
        return {
            "config": asdict(self.config),
            "metric": self.metric,
            "initial_validation": self.initial_validation,
            "best_validation": self.best_validation,
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
            "label_free": self.label_free,
            "curve": [dict(r) for r in self.curve],
            "notes": list(self.notes),
            "seconds": self.seconds,
        }


def distill(teacher: nn.Module, student: nn.Module, train: Dataset, validation: Dataset,
            config: DistillConfig = DistillConfig(), on_epoch: EpochCallback | None = None) -> DistillResult:
    """Train a copy of `student` to reproduce `teacher` on `train`; keep the best epoch on `validation`.

    Neither model passed in is changed: the student is deep-copied before training and the teacher
    is only run (in eval mode, its own modes restored afterwards). Models take the dataset's inputs
    positionally, in the dataset's order. The first output decides the validation metric.

    Loss per batch: for each output, `T^2 * KL(teacher/T || student/T)` when it is classifier logits
    (N x C, C > 1), else MSE to the teacher's output; summed over outputs. With training labels this
    soft term is weighted `alpha` and cross-entropy on the first output `1 - alpha`; without labels
    the soft term is the whole loss.
    """
    started = time.perf_counter()
    for name, data in (("training", train), ("validation", validation)):
        if len(data) == 0:
            raise DataError(f"distillation: the {name} data ({data.source}) has no samples")
    try:
        student = copy.deepcopy(student)
    except Exception as e:
        raise EdgemlError(f"distillation: cannot copy the student model ({first_line(e)}); "
                          "give a plain torch.nn.Module") from e
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise EdgemlError("distillation: the student has no trainable parameters; unfreeze them first")
    device = params[0].device

    train_x, val_x = _tensors(train), _tensors(validation)
    with _evaluating(teacher):
        train_t, val_t = _predict(teacher, train_x, config.batch_size), _predict(teacher, val_x, config.batch_size)
    student.eval()
    _check_outputs(_predict(student, [x[:2] for x in val_x], config.batch_size), val_t)

    labels, val_labels, metric, notes = _plan(train, validation, train_t, val_t)

    def score() -> tuple[float, float]:
        """The validation metric, and the soft-target loss that breaks ties (accuracy on a small
        validation split often saturates while the student still gets closer to the teacher)."""
        student.eval()
        with torch.no_grad():
            outs = _predict(student, val_x, config.batch_size)
            soft = _loss(outs, val_t, None, config).item()
        if metric == "negative_mse":
            return -sum(F.mse_loss(s, t).item() for s, t in zip(outs, val_t, strict=True)), soft
        target = val_labels if val_labels is not None else val_t[0].argmax(1)
        return (outs[0].argmax(1) == target).double().mean().item(), soft

    with _seeded(int(config.seed), device):
        generator = torch.Generator().manual_seed(int(config.seed))
        optimizer = torch.optim.Adam(params, lr=config.lr)
        initial, best_loss = score()
        best = initial
        best_epoch, best_state = 0, _snapshot(student)
        curve: list[dict] = []
        stopped = "all epochs"
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            student.train()
            total = 0.0
            for idx in _batches(len(train), config.batch_size, generator):
                outs = _outputs(student(*[x[idx].to(device) for x in train_x]))
                loss = _loss(outs, [t[idx].to(device) for t in train_t],
                             None if labels is None else labels[idx].to(device), config)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            value, soft = score()
            record = {"epoch": epoch, "train_loss": total / len(train), "validation": value,
                      "validation_loss": soft, "seconds": time.perf_counter() - epoch_start}
            curve.append(record)
            if on_epoch is not None:
                on_epoch(epoch, config.epochs, record)
            if value > best or (value == best and soft < best_loss):
                best, best_loss, best_epoch, best_state = value, soft, epoch, _snapshot(student)
            if epoch < config.epochs and epoch - best_epoch >= config.patience:
                stopped = "early stopping"
                break
            if epoch < config.epochs and config.max_seconds is not None \
                    and time.perf_counter() - started >= config.max_seconds:
                stopped = "time budget"
                break
    student.load_state_dict(best_state)
    student.eval()
    return DistillResult(student, config, metric, initial, best, best_epoch, stopped, labels is None, curve, notes,
                         time.perf_counter() - started)


def holdout(train: Dataset, fraction: float = 0.1, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Carve a validation split off training data (stratified by label when there are labels).

    Returns (train, validation): disjoint, together the whole dataset.
    """
    if not _is_number(fraction) or not 0 < fraction < 1:
        raise DataError(f"distillation: the validation fraction must be between 0 and 1 (0.1 = 10%), got {fraction!r}")
    if len(train) < 2:
        raise DataError(f"distillation: {train.source} has {len(train)} sample(s); "
                        "at least 2 are needed to hold out validation data")
    validation, rest = split(train, fraction, seed)
    return (replace(rest, source=f"{train.source} (training split, rest)"),
            replace(validation, source=f"{train.source} (validation split, {fraction:.0%})"))


def _tensors(data: Dataset) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in data.inputs.values()]


def _plan(train: Dataset, validation: Dataset, train_t: list[torch.Tensor], val_t: list[torch.Tensor]
          ) -> tuple[torch.Tensor | None, torch.Tensor | None, str, list[str]]:
    """The labels each split contributes, the metric that judges epochs, and notes that explain both."""
    notes = [f"output {i} (shape {_shape(t)}) is not classifier logits; matched to the teacher with MSE "
             "instead of KL divergence" for i, t in enumerate(train_t) if not _is_logits(t)]
    classifier = _is_logits(train_t[0])
    labels = _labels(train, train_t[0]) if classifier else None
    if train.labels is not None and not classifier:
        notes.append("training labels ignored: the first output is not classifier logits")
    if labels is None:
        notes.append("label-free: trained on the teacher's outputs only")
    val_labels = _labels(validation, val_t[0]) if classifier else None
    metric = "negative_mse" if not classifier else "accuracy" if val_labels is not None else "agreement"
    if metric == "agreement":
        notes.append("validation data has no labels: the metric is top-1 agreement with the teacher")
    return labels, val_labels, metric, notes


def _labels(data: Dataset, logits: torch.Tensor) -> torch.Tensor | None:
    if data.labels is None:
        return None
    labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
    classes = logits.shape[1]
    if len(labels) != len(data) or labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"distillation: {data.source} labels must be {len(data)} class indices from 0 to "
                        f"{classes - 1} (the model has {classes} outputs)")
    return labels


def _outputs(out) -> list[torch.Tensor]:
    """A model's floating-point outputs as a list (single tensor, tuple/list, or dict of them)."""
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out]
    tensors = [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not tensors:
        raise EdgemlError(f"distillation: the model returned {type(out).__name__} with no floating-point tensor; "
                          "it must return a tensor, or a tuple/list/dict of tensors")
    return tensors


def _predict(model: nn.Module, inputs: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Run the model on its own device in batches; every output, gathered on the CPU."""
    device = next(model.parameters(), torch.empty(0)).device
    chunks: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(inputs[0]), batch_size):
            out = model(*[x[start:start + batch_size].to(device) for x in inputs])
            chunks.append([t.detach().cpu() for t in _outputs(out)])
    return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


def _check_outputs(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
    if len(student) != len(teacher) or any(s.shape[1:] != t.shape[1:] for s, t in zip(student, teacher, strict=True)):
        raise EdgemlError(
            f"distillation: the student's outputs ({', '.join(_shape(s) for s in student)}) do not match the "
            f"teacher's ({', '.join(_shape(t) for t in teacher)}); the student must have the same outputs")


def _shape(t: torch.Tensor) -> str:
    return "x".join(["N", *map(str, t.shape[1:])])


def _is_logits(t: torch.Tensor) -> bool:
    return t.dim() == 2 and t.shape[1] > 1


def _loss(student: list[torch.Tensor], teacher: list[torch.Tensor], labels: torch.Tensor | None,
          config: DistillConfig) -> torch.Tensor:
    T = config.temperature
    soft = sum(
        F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True, reduction="batchmean") * T * T
        if _is_logits(t) else F.mse_loss(s, t)
        for s, t in zip(student, teacher, strict=True))
    if labels is None:
        return soft
    return config.alpha * soft + (1 - config.alpha) * F.cross_entropy(student[0], labels)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches; a trailing batch of one sample joins the previous one (batch norm needs two)."""
    batches = list(torch.randperm(n, generator=generator).split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG (dropout, fresh layers) for the run and give the caller's RNG state back afterwards."""
    cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
