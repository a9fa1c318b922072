"""The built-in example is reproducible: same seed, same weights, whatever ran before it."""

import torch

from edgeml.examples import digits_example
from edgeml.inputs.models import state_hash


def test_digits_example_trains_to_the_same_weights_every_time(monkeypatch, tmp_path):
    hashes = []
    for run in ("a", "b"):
        monkeypatch.setenv("EDGEML_CACHE_DIR", str(tmp_path / run))     # no cached weights: train anew
        torch.rand(3 if run == "a" else 5)                               # disturb the global generator
        example = digits_example()
        assert not example.cached
        hashes.append(state_hash(example.model))
    assert hashes[0] == hashes[1]
