"""Perplexity, its bootstrap CIs, top-1 agreement and the KL bound (edgeml.measure.perplexity), on logits whose
answers are known in closed form."""

import numpy as np
import pytest

from edgeml.measure import perplexity


def _windows(rng, documents=6, length=40, vocab=50):
    return perplexity.windows([list(rng.integers(0, vocab, length)) for _ in range(documents)], 32, 100)


def test_uniform_logits_have_the_vocabulary_size_as_perplexity():
    rng = np.random.default_rng(0)
    windows = _windows(rng)
    scored = perplexity.score(windows, lambda ids: np.zeros((len(ids), 50)), 6, keep=True)
    assert scored.perplexity() == pytest.approx(50)
    assert scored.tokens.sum() == 6 * 31


def test_the_original_against_itself_agrees_fully_with_no_kl():
    rng = np.random.default_rng(1)
    windows = _windows(rng)
    table = rng.standard_normal((50, 50)) * 3

    def logits(ids):
        return table[np.asarray(ids)]

    reference = perplexity.score(windows, logits, 6, keep=True)
    q = perplexity.quality(reference, perplexity.score(windows, logits, 6))
    assert q["ppl_increase"] == pytest.approx(0, abs=1e-12)
    assert q["top1_agreement"] == 1.0
    assert q["kl"] == pytest.approx(0, abs=1e-9)
    assert q["perplexity_ci95"][0] <= q["perplexity"] <= q["perplexity_ci95"][1]


def test_a_noisier_model_loses_perplexity_agreement_and_gains_kl():
    rng = np.random.default_rng(2)
    windows = _windows(rng, documents=12)
    table = rng.standard_normal((50, 50)) * 3
    noise = rng.standard_normal((50, 50)) * 2
    reference = perplexity.score(windows, lambda ids: table[np.asarray(ids)], 12, keep=True)
    scored = perplexity.score(windows, lambda ids: (table + noise)[np.asarray(ids)], 12)
    q = perplexity.quality(reference, scored)
    assert q["perplexity"] == pytest.approx(scored.perplexity())
    assert q["top1_agreement"] < 1
    assert q["kl"] > 0
    low, high = q["ppl_increase_ci95"]
    assert low <= q["ppl_increase"] <= high
    assert q["ppl_increase_se"] > 0


def test_the_kl_bound_never_exceeds_the_full_kl():
    rng = np.random.default_rng(3)
    vocab = 300                                   # more than TOP_K: the rest is merged into one outcome
    ids = list(rng.integers(0, vocab, 20))
    p_logits, q_logits = rng.standard_normal((20, vocab)) * 2, rng.standard_normal((20, vocab)) * 2
    window = perplexity.windows([ids], 20, 1)[0]
    perplexity.remember(window, p_logits)
    bound = perplexity._kl(window, perplexity._log_softmax(q_logits[:-1]))
    p, q = perplexity._log_softmax(p_logits[:-1]), perplexity._log_softmax(q_logits[:-1])
    full = (np.exp(p) * (p - q)).sum(-1)
    assert np.all(bound <= full + 1e-9)
    assert np.all(bound > 0)


def test_short_documents_are_left_out():
    assert [w.document for w in perplexity.windows([[1] * 10, [2] * 20, [3] * 15, [4] * 30], 8, 10)] == [1, 3]
