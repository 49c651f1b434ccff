"""Scoring attention as a word aligner: alignment error rate (AER) against gold links.

AER (Och & Ney 2003) with sure links only: ``1 - 2|A & G| / (|A| + |G|)``, where A are the
predicted and G the gold (source, target) links; 0 is perfect. The prediction of an
attention map links each target word to the source word it attends to most.
"""

from __future__ import annotations

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


def cross_attention_maps(model, params, arrays, batch_size):
    """``[L, N, H, T, S]`` teacher-forced cross-attention of the test set (row t is the
    step that predicts target word t)."""
    forward = jax.jit(lambda p, s, t: capture_attention(model, {"params": p}, s, t)[1])
    chunks = []
    for start in range(0, len(arrays["source"]), batch_size):
        maps = forward(
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
