"""What every runtime's language-model generator must do (edgeml.runtimes.generation.Generator)."""

from __future__ import annotations


def check_greedy_stream(generator, prompt: list[int]) -> list[int]:
    """The stream after `prompt` is greedy decoding (each token the argmax of logits() over the sequence so far) and
    ends after a stop token; returns its first 6 tokens."""
    expected, sequence = [], list(prompt)
    for _ in range(6):
        expected.append(int(generator.logits(sequence)[-1].argmax()))
        sequence.append(expected[-1])
    tokens = list(generator.stream(prompt, 6))
    assert tokens == expected
    stop = tokens[3]
    assert list(generator.stream(prompt, 6, stop={stop})) == tokens[:tokens.index(stop) + 1]
    return tokens
