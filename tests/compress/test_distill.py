"""Distillation on the digits CNN: a pruned-width student recovers the teacher's accuracy."""

import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from edgeml.compress.distill import SUPPORTS, DistillConfig, distill, holdout
from edgeml.errors import EdgemlError


def accuracy(model, dataset) -> float:
    with torch.no_grad():
        logits = model(torch.from_numpy(dataset.inputs["input"]))
    return float(np.mean(logits.argmax(1).numpy() == dataset.labels))


def narrow(model: nn.Module, keep: float = 0.25) -> nn.Module:
    """The DigitsCNN with only the first `keep` of each conv's channels, as structured pruning leaves it."""
    student = copy.deepcopy(model)
    previous = 1
    for i, layer in enumerate(student.features):
        if isinstance(layer, nn.Conv2d):
            out = int(layer.out_channels * keep)
            conv = nn.Conv2d(previous, out, 3, padding=1)
            conv.weight.data = layer.weight.data[:out, :previous].clone()
            conv.bias.data = layer.bias.data[:out].clone()
            student.features[i], previous = conv, out
    dense = student.classifier[1]                        # flattened 2x2 maps, channel-major
    student.classifier[1] = nn.Linear(previous * 4, dense.out_features)
    student.classifier[1].weight.data = dense.weight.data[:, :previous * 4].clone()
    student.classifier[1].bias.data = dense.bias.data.clone()
    return student.eval()


def unlabeled(dataset):
    return replace(dataset, labels=None)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def student(digits):
    student = narrow(digits.model)
    assert accuracy(student, digits.test) <= accuracy(digits.model, digits.test) - 0.05   # clearly worse to start
    return student


def test_distillation_recovers_the_teachers_accuracy(digits, student):
    teacher_acc, before = accuracy(digits.model, digits.test), accuracy(student, digits.test)
    seen = []
    config = DistillConfig(epochs=15)          # half the default, enough to come within 0.01 of the teacher
    result = distill(digits.model, student, digits.train, digits.validation, config,
                     on_epoch=lambda epoch, epochs, record: seen.append((epoch, epochs, record)))
    after = accuracy(result.student, digits.test)
    print(f"teacher {teacher_acc:.3f}, student before {before:.3f}, after {after:.3f}")
    assert after >= before + 0.05 and after >= teacher_acc - 0.05
    assert result.metric == "accuracy" and not result.label_free and result.notes == []
    assert result.best_validation > result.initial_validation
    assert [(e, n) for e, n, _ in seen] == [(r["epoch"], 15) for r in result.curve]
    assert set(result.curve[0]) == {"epoch", "train_loss", "validation", "validation_loss", "seconds"}
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]
    assert not result.student.training
    record = json.loads(json.dumps(result.to_dict()))
    assert record["best_epoch"] == result.best_epoch and record["config"]["temperature"] == 4.0


def test_label_free_distillation_recovers_accuracy(digits, student):
    before = accuracy(student, digits.test)
    result = distill(digits.model, student, unlabeled(digits.train), unlabeled(digits.validation))
    after = accuracy(result.student, digits.test)
    print(f"label-free: student before {before:.3f}, after {after:.3f}")
    assert after >= before + 0.05 and after >= accuracy(digits.model, digits.test) - 0.05
    assert result.label_free and result.metric == "agreement"
    assert any("label-free" in note for note in result.notes)


def test_same_seed_same_weights_and_inputs_untouched(digits, student):
    teacher = copy.deepcopy(digits.model).train()    # a mode distillation must give back
    given = copy.deepcopy(student).train()
    teacher_before, given_before = copy.deepcopy(teacher), copy.deepcopy(given)
    config = DistillConfig(epochs=3, seed=7)
    first = distill(teacher, given, digits.train, digits.validation, config)
    second = distill(teacher, given, digits.train, digits.validation, config)
    assert same_weights(first.student, second.student)
    assert [(r["train_loss"], r["validation"]) for r in first.curve] == \
        [(r["train_loss"], r["validation"]) for r in second.curve]
    assert not same_weights(first.student, given)     # it did train
    assert same_weights(teacher, teacher_before) and same_weights(given, given_before)
    assert teacher.training and given.training and first.student is not given
    other = distill(teacher, given, digits.train, digits.validation, replace(config, seed=8))
    assert not same_weights(first.student, other.student)


def test_alpha_weighs_soft_targets_against_labels(digits, student):
    def first_loss(train, alpha):
        config = DistillConfig(epochs=1, alpha=alpha)
        return distill(digits.model, student, train, digits.validation, config).curve[0]["train_loss"]
    soft_only = first_loss(unlabeled(digits.train), 0.7)            # label-free: the soft term is the loss
    assert first_loss(digits.train, 1.0) == pytest.approx(soft_only, rel=1e-6)
    assert abs(first_loss(digits.train, 0.0) - soft_only) > 0.1 * soft_only


def test_early_stopping_returns_the_best_epoch(digits, student):
    torch.manual_seed(0)
    guessing = copy.deepcopy(student)
    guessing.classifier[3].reset_parameters()       # near chance: early epochs improve, then it levels off
    config = DistillConfig(epochs=30, patience=1, lr=5e-3)     # a high rate: it levels off within a few epochs
    result = distill(digits.model, guessing, digits.train, digits.validation, config)
    assert result.stopped == "early stopping"
    assert 1 <= result.best_epoch and len(result.curve) == result.best_epoch + 1 < 30
    shorter = distill(digits.model, guessing, digits.train, digits.validation,
                      replace(config, epochs=result.best_epoch))
    assert shorter.stopped == "all epochs" and same_weights(result.student, shorter.student)
    values = [result.initial_validation] + [r["validation"] for r in result.curve]
    assert result.best_validation == max(values) == values[result.best_epoch]
    assert result.curve[-1]["validation"] <= result.best_validation
    assert accuracy(result.student, digits.validation) == pytest.approx(result.best_validation, abs=1e-12)


def test_time_budget_stops_after_the_epoch_that_crosses_it(digits, student):
    result = distill(digits.model, student, digits.train, digits.validation, DistillConfig(max_seconds=1e-6))
    assert result.stopped == "time budget" and len(result.curve) == 1


def test_outputs_that_are_not_logits_are_matched_with_mse(digits):
    teacher = digits.model.features                  # N x 128 x 2 x 2 feature maps
    torch.manual_seed(0)
    student = copy.deepcopy(teacher)
    student[5].reset_parameters()
    result = distill(teacher, student, digits.train, digits.validation, DistillConfig(epochs=3))
    assert result.metric == "negative_mse" and result.label_free
    assert any("MSE" in note for note in result.notes)
    assert any("labels ignored" in note for note in result.notes)
    assert result.initial_validation < result.best_validation <= 0


@pytest.mark.parametrize("bad", [
    {"epochs": 0}, {"epochs": 2.5}, {"epochs": True}, {"batch_size": 0}, {"lr": 0}, {"lr": float("nan")},
    {"temperature": -1.0}, {"alpha": 1.5}, {"patience": 0}, {"seed": -1}, {"max_seconds": 0},
])
def test_bad_configs_are_refused(bad):
    with pytest.raises(EdgemlError) as error:
        DistillConfig(**bad)
    message = str(error.value)
    assert "\n" not in message and next(iter(bad)) in message


def test_mismatched_models_and_labels_are_refused(digits, student):
    five_classes = copy.deepcopy(student)
    five_classes.classifier[3] = nn.Linear(128, 5)
    with pytest.raises(EdgemlError, match="student's outputs"):
        distill(digits.model, five_classes, digits.train, digits.validation)
    wrong = replace(digits.train, labels=digits.train.labels + 10)
    with pytest.raises(EdgemlError, match="class indices from 0 to 9"):
        distill(digits.model, student, wrong, digits.validation)


def test_holdout_is_a_stratified_disjoint_split(digits):
    indexed = replace(digits.train, inputs={"input": np.arange(len(digits.train))})
    train, validation = holdout(indexed, 0.2, seed=3)
    together = np.concatenate([train.inputs["input"], validation.inputs["input"]])
    assert np.array_equal(np.sort(together), np.arange(len(digits.train)))     # disjoint, nothing lost
    assert np.array_equal(validation.labels, digits.train.labels[validation.inputs["input"]])
    expected = np.bincount(digits.train.labels) * 0.2
    assert np.all(np.abs(np.bincount(validation.labels, minlength=10) - expected) <= 1)
    assert "validation split" in validation.source and "training split" in train.source
    again = holdout(indexed, 0.2, seed=3)[1]
    assert np.array_equal(again.inputs["input"], validation.inputs["input"])
    _, bare_validation = holdout(unlabeled(digits.train))
    assert bare_validation.labels is None and len(bare_validation) == round(len(digits.train) * 0.1)
    for fraction in (0, 1, 1.5):
        with pytest.raises(EdgemlError, match="between 0 and 1"):
            holdout(digits.train, fraction)


def test_supports_declares_a_torch_pass_with_optional_labels():
    assert SUPPORTS.input == "torch" and SUPPORTS.training and SUPPORTS.labels == "optional"
