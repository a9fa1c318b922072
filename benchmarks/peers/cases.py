"""The cases: models, their data and their quality budgets (fixed here, before anything runs).

Every budget is a largest drop below PyTorch FP32 on the model's quality metric, measured on held-out
data that no tool calibrated or tuned on; edgeml gets the same number as `max_accuracy_drop`.

Two cases use EfficientNet-Lite0. `efficientnet-fashion` is the one that can resolve a 1-point budget: the
ImageNet model fine-tuned here on Fashion-MNIST, judged by top-1 accuracy on the 10,000 labelled test
images. `efficientnet` (photo crops, agreement with FP32) is a stress test: the crops are far from
ImageNet, the FP32 model is unsure of most of them, and any change of arithmetic flips top-1 classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeml.inputs.data import Dataset, split
from edgeml.inputs.models import SourceModel, load_model

SEED = 0
# Sample counts: (full run, --quick).
SIZES = {
    "cnn": {"calibration": (1000, 200), "evaluation": (10_000, 1000), "train": (None, 6000), "epochs": (2, 1)},
    "efficientnet-fashion": {"calibration": (1000, 200), "evaluation": (10_000, 1000), "train": (10_000, 1000)},
    "efficientnet": {"calibration": (64, 16), "evaluation": (240, 32)},
    "minilm": {"calibration": (128, 32), "evaluation": (200, 32)},
}
MODELS = ("cnn", "efficientnet-fashion", "efficientnet", "minilm")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeml-benchmarks"


@dataclass
class Case:
    key: str
    title: str
    source: SourceModel            # the PyTorch model, loaded as edgeml loads it
    model: str                     # the same model for edgeml.optimize (package.module:factory)
    weights: str | None
    input_shapes: list[str]
    calibration: Dataset           # what every tool calibrates and tunes on
    evaluation: Dataset            # held out: every method is judged on it
    files: dict[str, Path]         # calib_data / eval_data [/ train_data] .npz files for edgeml.optimize
    metric: str                    # accuracy | agreement | cosine (against PyTorch FP32)
    max_drop: float                # the budget: largest drop of `metric` below PyTorch FP32
    budget: str                    # the budget in words
    data: str                      # the data in words
    transformer: bool = False
    stress: str | None = None      # why the case is a stress test rather than a measure of speed within budget

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.source.inputs]


def load_case(key: str, work: Path, quick: bool, fashion_mnist: Path = FASHION_MNIST, cache: Path = CACHE) -> Case:
    """The case `key`; `cache` keeps the fine-tuned EfficientNet-Lite0 between runs."""
    work.mkdir(parents=True, exist_ok=True)
    at = int(quick)
    sizes = {k: v[at] for k, v in SIZES[key].items()}
    if key == "cnn":
        return _fashion_cnn(work, sizes, fashion_mnist)
    if key == "efficientnet-fashion":
        return _efficientnet_fashion(work, sizes, fashion_mnist, cache)
    if key == "efficientnet":
        return _efficientnet(work, sizes)
    return _minilm(work, sizes)


def _save(work: Path, datasets: dict[str, Dataset]) -> dict[str, Path]:
    files = {}
    for name, d in datasets.items():
        files[f"{name}_data"] = work / f"{name}.npz"
        labels = {} if d.labels is None else {"labels": d.labels}
        np.savez(files[f"{name}_data"], **d.inputs, **labels)
    return files


def _fashion_mnist(root: Path) -> tuple[Dataset, Dataset]:
    from benchmarks.fashion_mnist import load

    if not root.is_dir():
        raise SystemExit(f"{root} not found: apt-get install dataset-fashion-mnist, or pass --fashion-mnist")
    return load(root)


def _fashion_cnn(work: Path, sizes: dict, root: Path) -> Case:
    from benchmarks.fashion_mnist import FashionCNN, train

    train_all, test = _fashion_mnist(root)
    calibration, train_set = split(train_all, sizes["calibration"] / len(train_all), SEED)
    if sizes["train"]:
        train_set = train_set.subset(np.arange(sizes["train"]), train_set.source)
    test = test.subset(np.arange(sizes["evaluation"]), f"{test.source} ({sizes['evaluation']:,} images)")
    files = _save(work, {"calib": calibration, "eval": test, "train": train_set})
    print(f"Training the CNN on {len(train_set):,} images ({sizes['epochs']} epochs)", flush=True)
    torch.manual_seed(SEED)
    model = FashionCNN()
    train(model, train_set, sizes["epochs"])
    torch.save(model.state_dict(), work / "cnn.pt")
    factory, shapes = "benchmarks.fashion_mnist:FashionCNN", ["input:?x1x28x28"]
    return Case("cnn", "Fashion-MNIST CNN", load_model(factory, work / "cnn.pt", shapes), factory,
                str(work / "cnn.pt"), shapes, calibration, test, files, "accuracy", 0.005,
                "at most 0.5 points of test accuracy below PyTorch FP32",
                f"trained here ({sizes['epochs']} epochs on {len(train_set):,} Fashion-MNIST training images); "
                f"calibration: {len(calibration):,} other training images; evaluation: the {len(test):,} test "
                "images (accuracy against their labels)")


def _efficientnet_fashion(work: Path, sizes: dict, root: Path, cache: Path) -> Case:
    from benchmarks.images import gray_to_rgb
    from benchmarks.models import FASHION_SIZE, FineTune, fine_tuned_lite0

    train_all, test = _fashion_mnist(root)
    calibration, train_set = split(train_all, sizes["calibration"] / len(train_all), SEED)
    train_set = train_set.subset(np.arange(sizes["train"]), f"{sizes['train']:,} Fashion-MNIST training images")
    test = test.subset(np.arange(sizes["evaluation"]), f"{test.source} ({sizes['evaluation']:,} images)")
    settings = FineTune(seed=SEED)
    weights = fine_tuned_lite0(train_set, settings, cache)

    def rgb(d: Dataset) -> Dataset:
        return Dataset({"inputs": gray_to_rgb(d.inputs["input"], FASHION_SIZE)}, d.labels, d.source,
                       classes=d.classes)
    calibration, test = rgb(calibration), rgb(test)
    files = _save(work, {"calib": calibration, "eval": test})
    factory, shapes = "benchmarks.models:efficientnet_lite0_fashion", [f"inputs:?x3x{FASHION_SIZE}x{FASHION_SIZE}"]
    return Case("efficientnet-fashion", "EfficientNet-Lite0 on Fashion-MNIST", load_model(factory, weights, shapes),
                factory, str(weights), shapes, calibration, test, files, "accuracy", 0.01,
                "at most 1.0 point of top-1 test accuracy below PyTorch FP32",
                f"pretrained EfficientNet-Lite0 (ImageNet) fine-tuned here with a new 10-class head ({settings.epochs} "
                f"epoch on {len(train_set):,} Fashion-MNIST training images, seed {settings.seed}; cached by "
                f"settings), images upscaled to {FASHION_SIZE}x{FASHION_SIZE} RGB; calibration: {len(calibration):,} "
                f"other training images (with labels); evaluation: the {len(test):,} test images (accuracy against "
                "their labels)")


def _efficientnet(work: Path, sizes: dict) -> Case:
    from benchmarks.images import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, photo_crops
    from benchmarks.models import lite0_weights

    calibration = Dataset({"inputs": photo_crops(CALIBRATION_PHOTOS, sizes["calibration"], seed=0)}, None,
                          f"{sizes['calibration']} crops of {len(CALIBRATION_PHOTOS)} photos")
    evaluation = Dataset({"inputs": photo_crops(EVALUATION_PHOTOS, sizes["evaluation"], seed=1)}, None,
                         f"{sizes['evaluation']} crops of {len(EVALUATION_PHOTOS)} other photos")
    files = _save(work, {"calib": calibration, "eval": evaluation})
    factory, weights, shapes = "benchmarks.models:efficientnet_lite0", lite0_weights(), ["inputs:?x3x224x224"]
    return Case("efficientnet", "EfficientNet-Lite0 photo crops (stress test)", load_model(factory, weights, shapes),
                factory, weights, shapes, calibration, evaluation, files, "agreement", 0.01,
                "top-1 agreement with PyTorch FP32 of at least 99 %",
                f"pretrained (ImageNet); calibration: {calibration.source} (scikit-image); evaluation: "
                f"{evaluation.source} (benchmarks/images.py); no labels, so top-1 agreement and KL against "
                "PyTorch FP32",
                stress="the crops are far from ImageNet's classes, so the FP32 model is unsure of most of them and "
                       "any change of arithmetic flips top-1 classes; its calibration photos are as far from "
                       "ImageNet as its evaluation ones")


def _minilm(work: Path, sizes: dict) -> Case:
    from benchmarks.models import MINILM, minilm_tokens
    from benchmarks.text import CALIBRATION_MODULES, EVALUATION_MODULES, split_texts

    calibration_texts, evaluation_texts = split_texts(sizes["calibration"], sizes["evaluation"], SEED)
    calibration = Dataset(minilm_tokens(calibration_texts), None,
                          f"{len(calibration_texts)} docstring paragraphs of {len(CALIBRATION_MODULES)} stdlib modules")
    evaluation = Dataset(minilm_tokens(evaluation_texts), None,
                         f"{len(evaluation_texts)} docstring paragraphs of {len(EVALUATION_MODULES)} other modules")
    files = _save(work, {"calib": calibration, "eval": evaluation})
    shapes = ["input_ids:?x128:int64", "attention_mask:?x128:int64"]
    tokens = int(evaluation.inputs["attention_mask"].sum(1).mean())
    return Case("minilm", "all-MiniLM-L6-v2 (128 tokens)", load_model(MINILM, None, shapes), MINILM, None, shapes,
                calibration, evaluation, files, "cosine", 0.01,
                "mean cosine similarity to the PyTorch FP32 embedding of at least 0.99",
                f"pretrained sentence encoder, mean-pooled embedding; calibration: {calibration.source}; "
                f"evaluation: {evaluation.source} (benchmarks/text.py), padded to 128 tokens ({tokens} real "
                "tokens on average)", transformer=True)
