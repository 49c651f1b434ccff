"""Boolean attention masks (True = attend) that compose with ``combine_masks``.

Every helper returns a mask that broadcasts against logits ``[B, H, T, S]``:
``[T, S]`` for position-only structure (causal, local window) and ``[B, 1, T, S]`` for
per-example structure (padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def causal_mask(query_length: int, kv_length: int | None = None, *, offset: int = 0) -> Array:
    """``[T, S]`` mask letting query ``i`` see keys ``j <= i + offset``.

    ``offset=0`` is the top-left alignment of ``jax.nn.dot_product_attention(is_causal=True)``;
    pass ``offset = S - T`` when the T queries are the *last* T of the S positions (a prompt
    continued from a cache).
    """
    kv_length = query_length if kv_length is None else kv_length
    rows = jnp.arange(query_length)[:, None]
    cols = jnp.arange(kv_length)[None, :]
    return cols <= rows + offset


def local_window_mask(
    query_length: int,
    kv_length: int | None = None,
    *,
    window: int | tuple[int, int],
    offset: int = 0,
) -> Array:
    """``[T, S]`` band mask: query ``i`` sees keys ``j`` with ``-left <= j - i - offset <= right``.

    Args:
      window: ``(left, right)`` number of neighbours on each side, or one int for both.
        ``(w, 0)`` combined with nothing else is causal sliding-window attention
        (Beltagy et al. 2020, Longformer).
    """
    left, right = (window, window) if isinstance(window, int) else window
    if left < 0 or right < 0:
        raise ValueError(f"local_window_mask: `window` must be >= 0, got {window}")
    kv_length = query_length if kv_length is None else kv_length
    centre = jnp.arange(query_length)[:, None] + offset
    cols = jnp.arange(kv_length)[None, :]
    return (cols >= centre - left) & (cols <= centre + right)


def valid_from_lengths(lengths: Array, max_length: int) -> Array:
    """``[B, L]`` bool: position ``l`` of example ``b`` is real iff ``l < lengths[b]``.

    Args:
      lengths: ``[B]`` integer lengths.
      max_length: L, the padded length.
    """
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1 or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(
            f"valid_from_lengths: `lengths` must be an integer array of shape [B], got "
            f"shape {list(lengths.shape)} dtype {lengths.dtype}"
        )
    return jnp.arange(max_length)[None, :] < lengths[:, None]


def valid_from_tokens(tokens: Array, pad_id: int = 0) -> Array:
    """``[B, L]`` bool: True where ``tokens [B, L]`` is not the padding id."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(
            f"valid_from_tokens: `tokens` must have shape [B, L], got {list(tokens.shape)}"
        )
    return tokens != pad_id


def make_attention_mask(query_valid: Array, kv_valid: Array | None = None) -> Array:
    """``[B, 1, T, S]`` padding mask: a pair is kept iff both its query and key are real.

    Padded query rows are therefore fully masked, and ``dot_product_attention`` returns zeros
    for them (not NaN, not an average of the values).

    Args:
      query_valid: ``[B, T]`` bool, True for real query positions.
      kv_valid: ``[B, S]`` bool for the keys; defaults to ``query_valid`` (self-attention).
    """
    kv_valid = query_valid if kv_valid is None else kv_valid
    for name, x in (("query_valid", query_valid), ("kv_valid", kv_valid)):
        if np.ndim(x) != 2:
            raise ValueError(
                f"make_attention_mask: `{name}` must have shape [B, L], got {list(np.shape(x))}"
            )
    if np.shape(query_valid)[0] != np.shape(kv_valid)[0]:
        raise ValueError(
            "make_attention_mask: batch sizes differ: query_valid "
            f"{list(np.shape(query_valid))} vs kv_valid {list(np.shape(kv_valid))}"
        )
    query_valid = jnp.asarray(query_valid, bool)
    kv_valid = jnp.asarray(kv_valid, bool)
    return (query_valid[:, None, :, None] & kv_valid[:, None, None, :])


def padding_mask_from_lengths(
    query_lengths: Array,
    query_length: int,
    kv_lengths: Array | None = None,
    kv_length: int | None = None,
) -> Array:
    """``[B, 1, T, S]`` padding mask from per-example lengths (right padding)."""
    query_valid = valid_from_lengths(query_lengths, query_length)
    if kv_lengths is None:
        return make_attention_mask(query_valid)
    kv_length = query_length if kv_length is None else kv_length
    return make_attention_mask(query_valid, valid_from_lengths(kv_lengths, kv_length))


def padding_mask_from_tokens(
    query_tokens: Array, kv_tokens: Array | None = None, *, pad_id: int = 0
) -> Array:
    """``[B, 1, T, S]`` padding mask from token ids ``[B, T]`` (and ``[B, S]``)."""
    query_valid = valid_from_tokens(query_tokens, pad_id)
    kv_valid = None if kv_tokens is None else valid_from_tokens(kv_tokens, pad_id)
    return make_attention_mask(query_valid, kv_valid)


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of boolean masks, broadcasting; ``None`` entries are skipped.

    Masks of lower rank get leading size-1 axes first (``[T, S]`` with ``[B, 1, T, S]``), by
    explicit reshape, so this also runs under ``jax.numpy_rank_promotion("raise")``.

    Returns ``None`` when every mask is ``None`` (no masking).
    """
    present = [m for m in masks if m is not None]
    for i, m in enumerate(present):
        if getattr(m, "dtype", None) != jnp.bool_:
            raise TypeError(
                f"combine_masks: every mask must be boolean, mask #{i} has dtype "
                f"{getattr(m, 'dtype', type(m).__name__)}"
            )
    if not present:
        return None
    rank = max(np.ndim(m) for m in present)
    present = [
        m if np.ndim(m) == rank else jnp.reshape(m, (1,) * (rank - np.ndim(m)) + np.shape(m))
        for m in present
    ]
    out = present[0]
    for m in present[1:]:
        out = jnp.logical_and(out, m)
    return out
