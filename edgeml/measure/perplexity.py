"""The quality of a language-model build against the original: perplexity on held-out documents (with a bootstrap
95% CI over documents, and the paired CI of its relative increase), top-1 agreement with the original's next
token, and the KL divergence from the original's next-token distribution.

The KL is taken over the original's 64 most likely tokens and the rest of the vocabulary as one more outcome: a
lower bound of the full KL (merging outcomes never increases it) that needs 64 numbers a position, not the
vocabulary, to remember the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOP_K = 64
BOOTSTRAP = 2000


@dataclass
class Window:
    """One window of a document's tokens, and what the original predicted at each position."""
    document: int
    ids: list[int]
    top1: np.ndarray | None = None        # [n-1] the original's most likely next token
    top_ids: np.ndarray | None = None     # [n-1, TOP_K]
    top_logp: np.ndarray | None = None    # [n-1, TOP_K] the original's log-probabilities of them


@dataclass
class Scored:
    """Per-document sums from one model: negative log-likelihood, tokens predicted, top-1 agreements with the
    original, and the summed KL."""
    nll: np.ndarray
    tokens: np.ndarray
    agree: np.ndarray
    kl: np.ndarray

    def perplexity(self) -> float:
        return float(np.exp(self.nll.sum() / self.tokens.sum()))


def windows(documents: Sequence[Sequence[int]], length: int, most: int) -> list[Window]:
    """Each document's first `length` tokens as one window (documents shorter than 16 tokens are left out),
    at most `most` windows."""
    return [Window(i, list(ids[:length])) for i, ids in enumerate(documents) if len(ids) >= 16][:most]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def remember(window: Window, logits: np.ndarray) -> None:
    """Keep what the original predicts in `window` (its top-1 and top-K log-probabilities) from its logits."""
    logp = _log_softmax(logits[:-1])
    top = np.argpartition(-logp, TOP_K - 1, axis=-1)[:, :TOP_K] if logp.shape[-1] > TOP_K else \
        np.tile(np.arange(logp.shape[-1]), (len(logp), 1))
    window.top1 = logp.argmax(axis=-1)
    window.top_ids = top
    window.top_logp = np.take_along_axis(logp, top, axis=-1)


def score(windows: Sequence[Window], logits_of, documents: int, keep: bool = False) -> Scored:
    """Score one model (`logits_of(ids)` -> [n, vocab]) on every window the original was remembered on; with
    `keep`, the model is the original: remember its predictions first."""
    scored = Scored(*(np.zeros(documents) for _ in range(4)))
    for window in windows:
        logits = np.asarray(logits_of(window.ids))
        if keep:
            remember(window, logits)
        logp = _log_softmax(logits[:-1])
        targets = np.asarray(window.ids[1:])
        d = window.document
        scored.nll[d] += -logp[np.arange(len(targets)), targets].sum()
        scored.tokens[d] += len(targets)
        scored.agree[d] += (logp.argmax(axis=-1) == window.top1).sum()
        scored.kl[d] += _kl(window, logp).sum()
    return scored


def _kl(window: Window, logp: np.ndarray) -> np.ndarray:
    """KL(original || this) per position over the original's top-K tokens plus the rest as one outcome."""
    p = np.exp(window.top_logp)
    q_logp = np.take_along_axis(logp, window.top_ids, axis=-1)
    p_rest = np.clip(1 - p.sum(axis=-1), 1e-12, 1)
    q_rest = np.clip(1 - np.exp(q_logp).sum(axis=-1), 1e-12, 1)
    return (p * (window.top_logp - q_logp)).sum(axis=-1) + p_rest * (np.log(p_rest) - np.log(q_rest))


def quality(reference: Scored, scored: Scored, seed: int = 0) -> dict:
    """The build's perplexity (95% CI over documents), its relative increase over the original's (paired CI and
    standard error: the same documents resampled for both), top-1 agreement and mean KL."""
    used = np.flatnonzero(reference.tokens)
    rng = np.random.default_rng(seed)
    picks = used[rng.integers(0, len(used), (BOOTSTRAP, len(used)))]
    ppl = np.exp(scored.nll[picks].sum(1) / scored.tokens[picks].sum(1))
    ref = np.exp(reference.nll[picks].sum(1) / reference.tokens[picks].sum(1))
    increase = scored.perplexity() / reference.perplexity() - 1
    tokens = scored.tokens.sum()
    return {"perplexity": scored.perplexity(), "perplexity_ci95": _ci(ppl),
            "ppl_increase": float(increase), "ppl_increase_ci95": _ci(ppl / ref - 1),
            "ppl_increase_se": float(np.std(ppl / ref - 1)),
            "top1_agreement": float(scored.agree.sum() / tokens), "kl": float(scored.kl.sum() / tokens),
            "documents": int(len(used)), "tokens": int(tokens)}


def _ci(values: np.ndarray) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
