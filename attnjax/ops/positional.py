"""Positional information for attention, which by itself is order-blind.

* ``sinusoidal_encoding``: absolute, added to embeddings (Vaswani et al. 2017, sec. 3.5).
* ``apply_rope``: rotary embeddings, rotate q and k so that ``q_m . k_n`` depends only on
  ``m - n`` (Su et al. 2021, RoFormer).
* ``alibi_slopes`` / ``alibi_score_fn`` / ``alibi_bias``: a per-head linear distance penalty
  added to the logits (Press et al. 2022, "Train Short, Test Long"): as a ``score_fn`` for
  ``dot_product_attention`` (no ``[H, T, S]`` array) or as a dense bias, one formula.
* ``segment_positions``: positions that restart at 0 in every packed document.

Learned position tables are parameters, so they live in ``attnjax.nn``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def sinusoidal_encoding(
    length: int | None = None,
    dim: int = 0,
    *,
    positions: Array | None = None,
    max_timescale: float = 10_000.0,
    dtype=jnp.float32,
) -> Array:
    """Sinusoidal position encodings, interleaved as in the paper.

    ``PE[p, 2i] = sin(p / 10000^(2i/dim))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/dim))``.

    Args:
      length: L; encodes positions ``0..L-1`` (ignored when ``positions`` is given).
      dim: model dim, must be even.
      positions: optional integer positions ``[..., L]`` (e.g. a decoding step).
      max_timescale: the 10000 of the paper.

    Returns:
      ``[L, dim]`` (or ``[..., L, dim]`` for ``positions``).
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"sinusoidal_encoding: `dim` must be a positive even int, got {dim}")
    if positions is None:
        if length is None or length <= 0:
            raise ValueError(f"sinusoidal_encoding: `length` must be > 0, got {length}")
        positions = jnp.arange(length)
    inv_freq = 1.0 / (max_timescale ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    positions = jnp.asarray(positions, jnp.float32)[..., None]  # [..., L, 1]
    # Broadcast by explicit reshape (no implicit rank promotion: numpy_rank_promotion="raise").
    angles = positions * inv_freq.reshape((1,) * (positions.ndim - 1) + (-1,))  # [..., L, dim/2]
    encoding = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # interleave
    return encoding.reshape(*angles.shape[:-1], dim).astype(dtype)


def rope_frequencies(head_dim: int, base: float = 10_000.0) -> np.ndarray:
    """``[head_dim / 2]`` rotation frequencies ``base^(-2i / head_dim)``."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"rope: head dim must be a positive even int, got {head_dim}")
    return 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def apply_rope(x: Array, positions: Array | None = None, *, base: float = 10_000.0) -> Array:
    """Rotary position embedding of queries or keys.

    Dimension ``i`` is paired with ``i + D/2`` (the "rotate half" layout of GPT-NeoX and
    LLaMA) and the pair is rotated by angle ``position * base^(-2i/D)``.

    Args:
      x: ``[..., L, H, D]`` queries or keys, D even.
      positions: integer positions broadcastable to ``[..., L]``; default ``arange(L)``.
      base: the frequency base (10000 in RoFormer).

    Returns:
      Rotated ``x``, same shape and dtype.
    """
    if x.ndim < 3:
        raise ValueError(f"apply_rope: `x` must have shape [..., L, H, D], got {list(x.shape)}")
    length, head_dim = x.shape[-3], x.shape[-1]
    inv_freq = jnp.asarray(rope_frequencies(head_dim, base), jnp.float32)
    if positions is None:
        positions = jnp.arange(length)
    positions = jnp.asarray(positions)
    if positions.ndim > 0 and positions.shape[-1] not in (1, length):
        raise ValueError(
            f"apply_rope: `positions` must broadcast to [..., L={length}], got shape "
            f"{list(positions.shape)}"
        )
    # Every broadcast below is by explicit reshape to one rank, so that this runs under
    # jax.numpy_rank_promotion("raise"): positions [..., L] -> [..., L, 1, 1].
    lead = max(positions.ndim, x.ndim - 2, 1)
    positions = jnp.reshape(positions, (1,) * (lead - positions.ndim) + positions.shape)
    angles = positions.astype(jnp.float32)[..., None, None] * inv_freq.reshape(
        (1,) * (lead + 1) + (-1,)
    )  # [..., L, 1, D/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    x32 = jnp.reshape(x32, (1,) * (lead + 2 - x.ndim) + x32.shape)
    first, second = x32[..., : head_dim // 2], x32[..., head_dim // 2 :]
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Per-head ALiBi slopes: the geometric sequence ``2^(-8/n), 2^(-16/n), ...``.

    For a head count that is not a power of two, the paper's recipe: take the slopes of the
    closest smaller power of two, then every other slope of the next power of two.
    """
    if num_heads <= 0:
        raise ValueError(f"alibi_slopes: `num_heads` must be > 0, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(closest)
    if closest < num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, np.float32)


def alibi_score_fn(num_heads: int, *, query_offset=0):
    """ALiBi as a ``score_fn`` for ``dot_product_attention``: ``score - slope_h * |i - j|``.

    Evaluated elementwise on the index arrays the attention passes in, so no ``[H, T, S]``
    bias is formed (``"chunked"`` applies it per block). The symmetric distance serves
    encoders; with a causal mask it equals the paper's ``slope * (j - i)`` on every visible
    pair.

    Args:
      num_heads: H, the number of query heads (the ``head`` index the attention passes).
      query_offset: added to the query index: the absolute position of the first query
        (an int, or a traced scalar such as a KV cache's index when decoding).

    Returns:
      ``score_fn(score, batch, head, q_index, kv_index) -> score`` (batch unused).
    """
    slopes = alibi_slopes(num_heads)

    def score_fn(score, batch, head, q_index, kv_index):
        del batch
        distance = jnp.abs(q_index + query_offset - kv_index).astype(score.dtype)
        return score - jnp.asarray(slopes, score.dtype)[head] * distance

    return score_fn


def alibi_bias(
    num_heads: int,
    query_length: int,
    kv_length: int | None = None,
    *,
    query_positions: Array | None = None,
    kv_positions: Array | None = None,
) -> Array:
    """``[H, T, S]`` ALiBi bias ``-slope_h * |i - j|``, ready for ``dot_product_attention(bias=)``
    (``alibi_score_fn`` evaluated densely, for implementations without ``score_fn``).

    Args:
      query_positions: optional ``[T]`` absolute query positions (default ``arange(T)``), e.g.
        the step index when decoding with a cache.
      kv_positions: optional ``[S]`` key positions (default ``arange(S)``).
    """
    kv_length = query_length if kv_length is None else kv_length
    if query_positions is None:
        query_positions = jnp.arange(query_length)
    if kv_positions is None:
        kv_positions = jnp.arange(kv_length)
    query_positions = jnp.asarray(query_positions, jnp.int32)
    kv_positions = jnp.asarray(kv_positions, jnp.int32)
    heads = jnp.arange(num_heads, dtype=jnp.int32).reshape(num_heads, 1, 1)
    t, s = query_positions.shape[0], kv_positions.shape[0]
    zeros = jnp.zeros((num_heads, t, s), jnp.float32)
    return alibi_score_fn(num_heads)(
        zeros, None, heads, query_positions.reshape(1, t, 1), kv_positions.reshape(1, 1, s))


def segment_positions(segment_ids: Array) -> Array:
    """``[..., L]`` int32 position of every token within its document.

    Packed documents are contiguous runs of equal ``segment_ids`` (``[..., L]`` int); the
    position restarts at 0 wherever the id changes, so a document packed behind others gets
    the positions it would have alone.
    """
    segment_ids = jnp.asarray(segment_ids)
    if segment_ids.ndim < 1 or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(
            f"segment_positions: `segment_ids` must be an integer array [..., L], got shape "
            f"{list(segment_ids.shape)} dtype {segment_ids.dtype}"
        )
    index = jnp.broadcast_to(jnp.arange(segment_ids.shape[-1], dtype=jnp.int32),
                             segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[..., :1], bool), segment_ids[..., 1:] != segment_ids[..., :-1]],
        axis=-1)
    start_of_document = jax.lax.cummax(jnp.where(starts, index, 0), axis=segment_ids.ndim - 1)
    return index - start_of_document
