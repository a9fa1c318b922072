"""The built-in example: a small CNN trained on scikit-learn's bundled digits (8x8 images).

No download: the data ships with scikit-learn. Training is seeded and takes a few seconds; the
trained weights are cached (as a plain state_dict) and reused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeml.cache import cache_dir
from edgeml.inputs.data import Dataset, Preprocess

SEED = 0
EPOCHS = 20
# 8x8 images with pixel values 0..16, scaled to 0..1.
PREPROCESS = Preprocess(size=(8, 8), layout="NCHW", color="gray", scale=1 / 16)


class DigitsCNN(nn.Module):
    """The example's architecture (also usable as the factory `edgeml.examples:DigitsCNN`)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 2 * 2, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, input):
        return self.classifier(self.features(input))


@dataclass
class DigitsExample:
    model: nn.Module       # trained, in eval mode
    train: Dataset
    validation: Dataset    # used for calibration
    test: Dataset          # used for evaluation
    weights: Path          # the cached state_dict
    cached: bool           # the weights were already in the cache


def digits_splits() -> tuple[Dataset, Dataset, Dataset]:
    """Stratified 60/20/20 train/validation/test split of the digits data, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) * PREPROCESS.scale)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=SEED)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                    random_state=SEED)

    def make(xs, ys, part):
        return Dataset({"input": xs}, ys, f"digits example, {part} split",
                       preprocessing=PREPROCESS.to_dict(), classes=[str(i) for i in range(10)])
    return make(x_train, y_train, "train"), make(x_val, y_val, "validation"), make(x_test, y_test, "test")


def digits_example() -> DigitsExample:
    train, val, test = digits_splits()
    with torch.random.fork_rng():       # seeded initial weights, without touching the caller's generator
        torch.manual_seed(SEED)
        model = DigitsCNN()
    path = cache_dir() / "examples" / f"digits-cnn-seed{SEED}-e{EPOCHS}.pt"
    cached = path.is_file()
    if cached:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        _train(model, train)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    model.eval()
    return DigitsExample(model, train, val, test, path, cached)


def _train(model, train: Dataset) -> None:
    torch.manual_seed(SEED)
    x = torch.from_numpy(train.inputs["input"])
    y = torch.from_numpy(train.labels)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def digits_source(example: DigitsExample):
    """The example as a loaded model: the factory with its cached weights, named "digits"."""
    from edgeml.inputs.models import load_model

    source = load_model("edgeml.examples:DigitsCNN", example.weights, ["input:?x1x8x8"])
    source.name = "digits"
    return source
