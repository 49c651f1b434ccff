"""Ring attention (Liu, Zaharia & Abbeel 2023): exact attention over a sequence sharded
across devices.

Each device of the ``axis_name`` mesh axis holds one contiguous block of the queries, keys
and values. The key/value blocks travel around the ring with ``lax.ppermute`` (device ``i``
sends to ``i + 1``) while every device keeps its query block, so after ``n`` steps each
query block has met every key block; the blocks are combined with the online softmax of
``ops.chunked_attention`` (a running row maximum, normaliser and unnormalised output). No
device ever holds more than one key/value block or a ``[T/n, S/n]`` score block. The
backward pass is JAX's own transpose of the loop (``ppermute`` transposes to the reverse
rotation); each step is rematerialised (``jax.checkpoint``), so only the step carries are
stored, not the score blocks.

With ``is_causal`` (top-left, query ``i`` sees keys ``j <= i`` in global positions), key
blocks entirely after a query block are skipped with ``lax.cond`` (their ``ppermute`` still
runs: the ring must keep turning).

Layout as everywhere in attnjax: ``query [B, T, H, D]``, ``key/value [B, S, Hk, D|Dv]``,
sharded on the length axis.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

try:  # jax >= 0.6
    from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

Array = jax.Array


def ring_attention_shard(query: Array, key: Array, value: Array, *, axis_name: str,
                         is_causal: bool = False, scale: float | None = None) -> Array:
    """Ring attention for code already inside ``shard_map`` over ``axis_name``.

    Args:
      query: this device's ``[B, Tb, H, D]`` block (global positions ``index * Tb ...``).
      key, value: this device's ``[B, Sb, Hk, D]`` / ``[B, Sb, Hk, Dv]`` blocks; Hk divides H.

    Returns:
      ``[B, Tb, H, Dv]``: this query block's output over the whole sequence. Query rows that
      see no key are zero.
    """
    b, tb, h, d = query.shape
    sb, hk, dv = value.shape[-3:]
    g = h // hk
    n = lax.psum(1, axis_name)
    index = lax.axis_index(axis_name)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    compute = jnp.promote_types(query.dtype, jnp.float32)
    q = (query.astype(compute) * scale).reshape(b, tb, hk, g, d)
    rotate = [(i, (i + 1) % n) for i in range(n)]
    q_pos = index * tb + jnp.arange(tb)

    def attend(k, v, source, stats):
        """Fold key/value block ``source`` into the running statistics."""
        m, norm, acc = stats
        s = jnp.einsum("bqkgd,bskd->bkgqs", q, k.astype(compute))  # [B, Hk, G, Tb, Sb]
        if is_causal:
            k_pos = source * sb + jnp.arange(sb)
            s = jnp.where(k_pos[None, :] <= q_pos[:, None], s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # rows that saw no key yet
        p = jnp.exp(s - m_safe[..., None])
        correction = jnp.exp(m - m_safe)
        norm = norm * correction + p.sum(-1)
        acc = acc * correction[..., None] + jnp.einsum("bkgqs,bskd->bkgqd", p,
                                                       v.astype(compute))
        return m_new, norm, acc

    @jax.checkpoint  # keep the step carries for the backward pass, recompute the scores
    def step(carry, i):
        k, v, stats = carry
        source = (index - i) % n  # the block that arrived after i rotations
        if is_causal:  # blocks wholly after this query block are all masked: skip them
            stats = lax.cond(source <= index, lambda st: attend(k, v, source, st),
                             lambda st: st, stats)
        else:
            stats = attend(k, v, source, stats)
        k, v = lax.ppermute((k, v), axis_name, rotate)
        return (k, v, stats), None

    # Derived from q so that they carry its sharding/varying-axis type (see ops.chunked).
    zeros = jnp.zeros_like(jnp.moveaxis(q[..., 0], 1, 3))  # [B, Hk, G, Tb]
    stats = (jnp.full_like(zeros, -jnp.inf), zeros,
             jnp.broadcast_to(zeros[..., None], (*zeros.shape, dv)))
    (_, _, (m, norm, acc)), _ = lax.scan(step, (key, value, stats), jnp.arange(n))
    out = acc / jnp.where(norm > 0, norm, 1.0)[..., None]  # [B, Hk, G, Tb, Dv]
    return jnp.moveaxis(out, 3, 1).reshape(b, tb, h, dv).astype(query.dtype)


def ring_attention(query: Array, key: Array, value: Array, *, mesh: Mesh,
                   axis_name: str = "seq", is_causal: bool = False,
                   scale: float | None = None) -> Array:
    """Exact attention with the sequence axis sharded over ``mesh.shape[axis_name]`` devices.

    Args:
      query: ``[B, T, H, D]``; key: ``[B, S, Hk, D]``; value: ``[B, S, Hk, Dv]``. T and S must
        be divisible by the number of devices on ``axis_name``.
      mesh: a ``jax.sharding.Mesh`` with an ``axis_name`` axis (other axes replicate).

    Returns:
      ``[B, T, H, Dv]``, sharded like ``query`` (length over ``axis_name``).
    """
    if axis_name not in mesh.shape:
        raise ValueError(f"ring_attention: mesh has no axis {axis_name!r} (axes {mesh.axis_names})")
    n = mesh.shape[axis_name]
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.ndim != 4:
            raise ValueError(f"ring_attention: `{name}` must be [B, L, H, D], got {list(x.shape)}")
        if x.shape[1] % n:
            raise ValueError(f"ring_attention: `{name}` length {x.shape[1]} is not divisible by "
                             f"the {n} devices of mesh axis {axis_name!r}")
    if query.shape[2] % key.shape[2] or key.shape[2] != value.shape[2]:
        raise ValueError(f"ring_attention: key/value heads {key.shape[2]}/{value.shape[2]} must "
                         f"be equal and divide the query heads {query.shape[2]}")
    spec = P(None, axis_name, None, None)
    fn = functools.partial(ring_attention_shard, axis_name=axis_name, is_causal=is_causal,
                           scale=scale)
    return _shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(
        query, key, value)
