"""Additive attention (Bahdanau, Cho & Bengio 2015), the attention of RNN seq2seq models.

``score(s, h_j) = v^T tanh(W_q s + W_k h_j)``: a one-hidden-layer MLP scores each pair instead
of a dot product. The projections ``W_q s`` and ``W_k h_j`` are done by the caller (a Flax
module owns those parameters); these functions do the pairwise math.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.ops.attention import masked_softmax

Array = jax.Array


def additive_scores(query_proj: Array, key_proj: Array, v: Array) -> Array:
    """Pairwise scores ``v . tanh(q_t + k_s)``.

    Args:
      query_proj: ``[..., T, A]`` projected decoder states ``W_q s``.
      key_proj: ``[..., S, A]`` projected encoder states ``W_k h`` (plus bias).
      v: ``[A]`` scoring vector.

    Returns:
      ``[..., T, S]`` scores.
    """
    if np.ndim(query_proj) < 2 or np.ndim(key_proj) != np.ndim(query_proj):
        raise ValueError(
            "additive_scores: `query_proj` must be [..., T, A] and `key_proj` [..., S, A] of "
            f"the same rank, got {list(np.shape(query_proj))} and {list(np.shape(key_proj))}"
        )
    a = np.shape(query_proj)[-1]
    if np.shape(key_proj)[-1] != a or np.shape(v) != (a,):
        raise ValueError(
            f"additive_scores: `key_proj` [..., S, A={a}] and `v` [A={a}] must share the "
            f"attention dim of `query_proj`, got key_proj {list(np.shape(key_proj))}, "
            f"v {list(np.shape(v))}"
        )
    hidden = jnp.tanh(query_proj[..., :, None, :] + key_proj[..., None, :, :])  # [..., T, S, A]
    return jnp.einsum("...tsa,a->...ts", hidden, v)


def additive_attention(
    query_proj: Array,
    key_proj: Array,
    values: Array,
    v: Array,
    *,
    mask: Array | None = None,
) -> tuple[Array, Array]:
    """Bahdanau attention: context vectors and weights.

    Args:
      query_proj: ``[..., T, A]``; key_proj: ``[..., S, A]``; v: ``[A]`` (see
        ``additive_scores``).
      values: ``[..., S, Dv]`` the encoder states to average.
      mask: optional bool broadcastable to ``[..., T, S]``; True = attend.

    Returns:
      ``(context [..., T, Dv], weights [..., T, S])``; fully masked rows give zeros.
    """
    if np.shape(values)[:-1] != np.shape(key_proj)[:-1]:
        raise ValueError(
            f"additive_attention: `values` must have shape [..., S, Dv] matching key_proj "
            f"{list(np.shape(key_proj))[:-1]}, got {list(np.shape(values))}"
        )
    if mask is not None and getattr(mask, "dtype", None) != jnp.bool_:
        raise TypeError(f"additive_attention: `mask` must be boolean, got {mask.dtype}")
    weights = masked_softmax(additive_scores(query_proj, key_proj, v), mask)
    context = jnp.einsum("...ts,...sd->...td", weights.astype(values.dtype), values)
    return context, weights
