"""Scoring attention as a word aligner: alignment error rate (AER) against gold links.

AER (Och & Ney 2003) with sure links only: ``1 - 2|A & G| / (|A| + |G|)``, where A are the
predicted and G the gold (source, target) links; 0 is perfect. The prediction of an
attention map links each target word to the source word it attends to most.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import jax
import numpy as np

from attnjax.analysis.capture import capture_attention, stack_layers

Link = tuple[int, int]  # (source index, target index)


def alignment_error_rate(predicted: Iterable[Link], gold: Iterable[Link]) -> float:
    """AER of predicted links against gold links, pooled over the given links."""
    predicted, gold = set(predicted), set(gold)
    if not predicted and not gold:
        return 0.0
    return 1.0 - 2.0 * len(predicted & gold) / (len(predicted) + len(gold))


def argmax_links(weights: np.ndarray, source_length: int, target_length: int) -> set[Link]:
    """Link target ``t`` to ``argmax_s weights[t, s]`` over the real source words.

    Args:
      weights: ``[T, S]`` attention of target positions (rows) over source positions.
      source_length: number of real source words (excludes EOS and padding).
      target_length: number of real target words to link.
    """
    weights = np.asarray(weights)[:target_length, :source_length]
    return {(int(s), t) for t, s in enumerate(weights.argmax(axis=1))}


def diagonal_links(source_length: int, target_length: int) -> set[Link]:
    """The monotonic baseline: target ``t`` links to source ``round(t * (S - 1) / (T - 1))``."""
    if target_length == 1:
        return {(0, 0)}
    scale = (source_length - 1) / (target_length - 1)
    return {(int(round(t * scale)), t) for t in range(target_length)}


def corpus_aer(
    links: Sequence[set[Link]], golds: Sequence[Iterable[Link]]
) -> float:
    """AER pooled over a corpus (links of sentence i are compared with gold of sentence i)."""
    predicted = {(i, s, t) for i, sentence in enumerate(links) for s, t in sentence}
    gold = {(i, s, t) for i, sentence in enumerate(golds) for s, t in sentence}
    return alignment_error_rate(predicted, gold)


def head_aers(
    cross_attention: np.ndarray,
    golds: Sequence[Iterable[Link]],
    source_lengths: Sequence[int],
    target_lengths: Sequence[int],
) -> np.ndarray:
    """Corpus AER of every layer and head.

    Args:
      cross_attention: ``[L, N, H, T, S]`` weights of L layers for N sentences.
      golds: N gold link sets; source_lengths, target_lengths: N real lengths.

    Returns:
      ``[L, H]`` AERs.
    """
    num_layers, n, num_heads = cross_attention.shape[:3]
    if not (len(golds) == len(source_lengths) == len(target_lengths) == n):
        raise ValueError(
            f"head_aers: {n} sentences in `cross_attention` but {len(golds)} golds, "
            f"{len(source_lengths)} source and {len(target_lengths)} target lengths"
        )
    out = np.zeros((num_layers, num_heads))
    for layer in range(num_layers):
        for head in range(num_heads):
            links = [
                argmax_links(cross_attention[layer, i, head], source_lengths[i], target_lengths[i])
                for i in range(n)
            ]
            out[layer, head] = corpus_aer(links, golds)
    return out


@functools.partial(jax.jit, static_argnums=0)
def _sown_attention(model, params, source, target_in):
    # Modules hash by their fields: one compilation per model and shape, across calls.
    return capture_attention(model, {"params": params}, source, target_in)[1]


def cross_attention_maps(model, params, arrays, batch_size):
    """``[L, N, H, T, S]`` teacher-forced cross-attention of the test set (row t is the
    step that predicts target word t)."""
    chunks = []
    for start in range(0, len(arrays["source"]), batch_size):
        maps = _sown_attention(
            model,
            params,
            arrays["source"][start : start + batch_size],
            arrays["target_in"][start : start + batch_size],
        )
        kind = "cross_attention" if type(model).__name__ == "EncoderDecoder" else None
        if kind is None:
            chunks.append(np.stack([np.asarray(w) for w in maps.values()]))
        else:
            chunks.append(stack_layers(maps, kind))
    return np.concatenate(chunks, axis=1)


# --------------------------------------------------------------------------- IBM Model 1

NULL = "<null>"


class IBMModel1:
    """IBM Model 1 (Brown et al. 1993, sec. 4.1), trained by EM: word translation
    probabilities ``t(target word | source word)``, with a NULL source word (index 0 of
    every source sentence) that target words may align to, and no position model.

    The Viterbi alignment of Model 1 links target word ``j`` to
    ``argmax_i t(f_j | e_i)`` over the source words (and NULL; a NULL link is no link; ties
    go to the first position, as ``np.argmax``). Words never seen in training have ``t = 0``
    everywhere, so they align to NULL (no link).

    Attributes:
      source_words, target_words: the training vocabularies (``source_words[0]`` is NULL).
      translation: ``[|target_words|, |source_words|]`` array, column ``e`` is
        ``t(. | e)`` (sums to 1).
    """

    def __init__(self, source_words, target_words, translation: np.ndarray):
        self.source_words = tuple(source_words)
        self.target_words = tuple(target_words)
        self.translation = np.asarray(translation, np.float64)
        self._source_ids = {w: i for i, w in enumerate(self.source_words)}
        self._target_ids = {w: i for i, w in enumerate(self.target_words)}

    @classmethod
    def train(cls, pairs: Sequence[tuple[Sequence[str], Sequence[str]]], *,
              iterations: int = 10, null: bool = True) -> IBMModel1:
        """EM on ``(source_tokens, target_tokens)`` pairs from a uniform start.

        Args:
          pairs: N sentence pairs; a pair with an empty side is skipped.
          iterations: EM iterations (each: expected link counts, then renormalise).
          null: give every source sentence the NULL word (Brown et al.); without it every
            target word must align to a real source word.
        """
        if iterations < 0:
            raise ValueError(f"IBMModel1.train: `iterations` must be >= 0, got {iterations}")
        pairs = [(tuple(s), tuple(t)) for s, t in pairs if len(s) and len(t)]
        if not pairs:
            raise ValueError("IBMModel1.train: `pairs` has no pair with two non-empty sides")
        source_words = (NULL,) + tuple(sorted({w for s, _ in pairs for w in s}))
        target_words = tuple(sorted({w for _, t in pairs for w in t}))
        s_ids = {w: i for i, w in enumerate(source_words)}
        t_ids = {w: i for i, w in enumerate(target_words)}
        # Padded [N, I] source and [N, J] target ids; masks mark the real words.
        width_s = max(len(s) for s, _ in pairs) + 1
        width_t = max(len(t) for _, t in pairs)
        source = np.zeros((len(pairs), width_s), np.int64)
        target = np.zeros((len(pairs), width_t), np.int64)
        source_mask = np.zeros(source.shape, bool)
        target_mask = np.zeros(target.shape, bool)
        for n, (s, t) in enumerate(pairs):
            source[n, 1 : len(s) + 1] = [s_ids[w] for w in s]
            source_mask[n, 1 : len(s) + 1] = True
            source_mask[n, 0] = null
            target[n, : len(t)] = [t_ids[w] for w in t]
            target_mask[n, : len(t)] = True
        num_s, num_t = len(source_words), len(target_words)
        translation = np.full((num_t, num_s), 1.0 / num_t)
        mask = target_mask[:, :, None] & source_mask[:, None, :]  # [N, J, I]
        flat = (target[:, :, None] * num_s + source[:, None, :])[mask]
        for _ in range(iterations):
            probs = np.where(mask, translation[target[:, :, None], source[:, None, :]], 0.0)
            posterior = probs / np.maximum(probs.sum(-1, keepdims=True), 1e-300)
            counts = np.bincount(flat, weights=posterior[mask],
                                 minlength=num_t * num_s).reshape(num_t, num_s)
            totals = counts.sum(0, keepdims=True)
            translation = np.where(totals > 0, counts / np.maximum(totals, 1e-300), 0.0)
        return cls(source_words, target_words, translation)

    def prob(self, target_word: str, source_word: str) -> float:
        """``t(target_word | source_word)``; 0 for a word not seen in training."""
        i, j = self._source_ids.get(source_word), self._target_ids.get(target_word)
        return 0.0 if i is None or j is None else float(self.translation[j, i])

    def links(self, source: Sequence[str], target: Sequence[str]) -> set[Link]:
        """The Viterbi alignment ``{(source index, target index)}`` of one pair (indices
        into ``source`` and ``target``, NULL links dropped)."""
        cols = [0] + [self._source_ids.get(w, -1) for w in source]
        out = set()
        for j, word in enumerate(target):
            row = self._target_ids.get(word)
            if row is None:
                continue
            # Without NULL training the NULL column is all zero and never wins.
            scores = np.array([self.translation[row, c] if c >= 0 else 0.0 for c in cols])
            best = int(np.argmax(scores))
            if best > 0 and scores[best] > 0:
                out.add((best - 1, j))
        return out

    def corpus_links(self, pairs: Sequence[tuple[Sequence[str], Sequence[str]]]
                     ) -> list[set[Link]]:
        """``links`` of every pair."""
        return [self.links(s, t) for s, t in pairs]
