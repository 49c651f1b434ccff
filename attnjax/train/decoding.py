"""Autoregressive decoding: greedy and beam search over a step function.

Both work for any model that exposes one decoding step as

    step_fn(state, tokens [B, 1]) -> (logits [B, V], state)

where ``state`` is a pytree (a transformer's KV cache, an RNN's carry). Every leaf of
``state`` with ``ndim >= 1`` must have the batch as its leading axis; scalar leaves (a cache
index shared by the batch) are left alone. Both loops run inside ``lax.while_loop``, so they
jit into one program and stop as soon as every sequence has emitted ``eos_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
StepFn = Callable[[Any, Array], tuple[Array, Any]]


def greedy_decode(
    step_fn: StepFn,
    state: Any,
    *,
    batch_size: int,
    max_len: int,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
) -> Array:
    """Pick the argmax token at every step.

    Returns:
      ``[B, max_len]`` ids (without BOS), ending with ``eos_id`` and padded with ``pad_id``
      after it (a sequence that never ends fills all ``max_len`` positions).
    """

    def cond(carry):
        i, _, _, _, done = carry
        return (i < max_len) & ~jnp.all(done)

    def body(carry):
        i, state, previous, out, done = carry
        logits, state = step_fn(state, previous[:, None])
        token = jnp.where(done, pad_id, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        out = jax.lax.dynamic_update_slice_in_dim(out, token[:, None], i, axis=1)
        return i + 1, state, token, out, done | (token == eos_id)

    init = (
        jnp.array(0),
        state,
        jnp.full((batch_size,), bos_id, jnp.int32),
        jnp.full((batch_size, max_len), pad_id, jnp.int32),
        jnp.zeros((batch_size,), bool),
    )
    return jax.lax.while_loop(cond, body, init)[3]


def _gather_beams(tree: Any, indices: Array, batch_size: int, beam_size: int) -> Any:
    """Reorder the flattened ``[B * K, ...]`` leaves by per-example beam ``indices [B, K]``."""
    flat = (indices + beam_size * jnp.arange(batch_size)[:, None]).reshape(-1)
    return jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else jnp.take(x, flat, axis=0), tree)


def tile_beams(tree: Any, beam_size: int) -> Any:
    """Repeat every batched leaf ``[B, ...] -> [B * K, ...]`` (beam-major within example)."""
    return jax.tree.map(
        lambda x: x if jnp.ndim(x) == 0 else jnp.repeat(x, beam_size, axis=0), tree
    )


def beam_search(
    step_fn: StepFn,
    state: Any,
    *,
    batch_size: int,
    beam_size: int,
    max_len: int,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    length_penalty: float = 0.6,
) -> tuple[Array, Array]:
    """Beam search (Sutskever et al. 2014) with the GNMT length penalty (Wu et al. 2016).

    Args:
      state: the decoding state for batch ``B`` (it is tiled to ``B * beam_size`` here).
      length_penalty: alpha in ``((5 + length) / 6) ** alpha``; 0 ranks by raw log-prob.

    Returns:
      ``(sequences [B, max_len], scores [B])``: the best finished (or, failing that, alive)
      hypothesis per example, padded like ``greedy_decode``, and its penalised log-prob.
    """
    b, k = batch_size, beam_size
    state = tile_beams(state, k)
    neg_inf = jnp.array(-1e9, jnp.float32)

    def cond(carry):
        i, *_, finished = carry
        return (i < max_len) & ~jnp.all(finished)

    def body(carry):
        i, state, sequences, scores, finished = carry
        previous = jax.lax.dynamic_slice_in_dim(sequences, jnp.maximum(i - 1, 0), 1, axis=2)
        previous = jnp.where(i == 0, bos_id, previous[..., 0]).reshape(b * k, 1)
        logits, state = step_fn(state, previous)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(b, k, -1)
        vocab = log_probs.shape[-1]
        # A finished beam can only extend with padding, at no cost, keeping its score.
        only_pad = jnp.where(jnp.arange(vocab) == pad_id, 0.0, neg_inf)
        log_probs = jnp.where(finished[..., None], only_pad, log_probs)
        candidates = (scores[..., None] + log_probs).reshape(b, k * vocab)
        scores, flat_index = jax.lax.top_k(candidates, k)
        beam, token = flat_index // vocab, (flat_index % vocab).astype(jnp.int32)
        sequences = jnp.take_along_axis(sequences, beam[..., None], axis=1)
        sequences = jax.lax.dynamic_update_slice_in_dim(sequences, token[..., None], i, axis=2)
        finished = jnp.take_along_axis(finished, beam, axis=1) | (token == eos_id)
        state = _gather_beams(state, beam, b, k)
        return i + 1, state, sequences, scores, finished

    # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
    scores = jnp.tile(jnp.concatenate([jnp.zeros(1), jnp.full(k - 1, neg_inf)]), (b, 1))
    init = (
        jnp.array(0),
        state,
        jnp.full((b, k, max_len), pad_id, jnp.int32),
        scores,
        jnp.zeros((b, k), bool),
    )
    _, _, sequences, scores, finished = jax.lax.while_loop(cond, body, init)
    lengths = jnp.sum(sequences != pad_id, axis=-1).astype(jnp.float32)
    penalised = scores / ((5.0 + lengths) / 6.0) ** length_penalty
    # Prefer finished hypotheses; among them (or among alive ones if none), the best score.
    ranked = jnp.where(finished, penalised, penalised + neg_inf)
    best = jnp.argmax(ranked, axis=-1)
    rows = jnp.arange(b)
    return sequences[rows, best], penalised[rows, best]
