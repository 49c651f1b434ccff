"""Ring attention (Liu, Zaharia & Abbeel 2023): exact attention over a sequence sharded
across devices.

Each device of the ``axis_name`` mesh axis holds one contiguous block of the queries, keys
and values. The key/value blocks travel around the ring with ``lax.ppermute`` (device ``i``
sends to ``i + 1``) while every device keeps its query block, so after ``n`` steps each
query block has met every key block.

Within a device, each (query block, key/value block) pair is computed blockwise by the
kernels of ``ops.chunked`` (online softmax over ``block_q x block_k`` tiles, "Ring Attention
with Blockwise Transformers"), which return the pair's output and row log-sum-exp; the
pairs are merged by their log-sum-exps. The backward pass is a ``jax.custom_vjp`` that runs
the ring again: the key/value blocks travel with their gradient accumulators ``dK, dV``
(which arrive home after ``n`` rotations) while each device recomputes its tiles'
probabilities from the saved global log-sum-exp (FlashAttention-2's backward). So no device
ever holds a ``[T/n, S/n]`` score block, forward or backward: per-device memory is
``O((T + S) / n)``. Communication per device: ``n - 1`` key/value blocks forward, ``n - 1``
key/value blocks and ``n`` gradient blocks backward.

With ``is_causal`` (top-left, query ``i`` sees keys ``j <= i`` in global positions) and
equal query and key lengths, a device's own block is computed with the causal kernel,
earlier blocks in full and later blocks are skipped (``lax.switch``; the ring keeps
turning). Causal attention with different query and key lengths uses a simpler dense step
(each step materialises its ``[T/n, S/n]`` scores, rematerialised in the backward pass).

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

from attnjax.ops import chunked as _chunked
from attnjax.ops.structure import Structure

try:  # jax >= 0.6
    from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

Array = jax.Array


def _dense_shard(query: Array, key: Array, value: Array, *, axis_name: str,
                 is_causal: bool, scale: float | None) -> Array:
    """Ring attention with one dense ``[Tb, Sb]`` score block per step (used for causal
    attention between different query and key lengths); backward by JAX's transpose."""
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
    neg = _chunked.large_negative(compute)  # finite stand-in for -inf (jax.debug_infs)

    def attend(k, v, source, stats):
        """Fold key/value block ``source`` into the running statistics."""
        m, norm, acc = stats
        s = jnp.einsum("bqkgd,bskd->bkgqs", q, k.astype(compute))  # [B, Hk, G, Tb, Sb]
        if is_causal:
            k_pos = source * sb + jnp.arange(sb)
            visible = k_pos[None, :] <= q_pos[:, None]  # [Tb, Sb]
            s = jnp.where(visible.reshape(1, 1, 1, tb, sb), s, neg)
        m_new = jnp.maximum(m, s.max(-1))
        m_safe = jnp.where(m_new == neg, 0.0, m_new)  # rows that saw no key yet
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
            # (by positions: with Sb < Tb a later block index can still hold visible keys)
            visible = source * sb <= index * tb + tb - 1
            stats = lax.cond(visible, lambda st: attend(k, v, source, st),
                             lambda st: st, stats)
        else:
            stats = attend(k, v, source, stats)
        k, v = lax.ppermute((k, v), axis_name, rotate)
        return (k, v, stats), None

    # Derived from q so that they carry its sharding/varying-axis type (see ops.chunked).
    zeros = jnp.zeros_like(jnp.moveaxis(q[..., 0], 1, 3))  # [B, Hk, G, Tb]
    stats = (jnp.full_like(zeros, neg), zeros,
             jnp.broadcast_to(zeros[..., None], (*zeros.shape, dv)))
    (_, _, (m, norm, acc)), _ = lax.scan(step, (key, value, stats), jnp.arange(n))
    out = acc / jnp.where(norm > 0, norm, 1.0)[..., None]  # [B, Hk, G, Tb, Dv]
    return jnp.moveaxis(out, 3, 1).reshape(b, tb, h, dv).astype(query.dtype)


def ring_attention_shard(query: Array, key: Array, value: Array, *, axis_name: str,
                         is_causal: bool = False, scale: float | None = None,
                         block_q: int | None = None, block_k: int | None = None) -> Array:
    """Ring attention for code already inside ``shard_map`` over ``axis_name``.

    Args:
      query: this device's ``[B, Tb, H, D]`` block (global positions ``index * Tb ...``).
      key, value: this device's ``[B, Sb, Hk, D]`` / ``[B, Sb, Hk, Dv]`` blocks; Hk divides H.
      block_q, block_k: tile sizes within a device (default ``ops.chunked.default_blocks``).

    Returns:
      ``[B, Tb, H, Dv]``: this query block's output over the whole sequence. Query rows that
      see no key are zero.
    """
    b, tb, h, d = query.shape
    sb, hk, dv = value.shape[-3:]
    if is_causal and tb != sb:
        return _dense_shard(query, key, value, axis_name=axis_name, is_causal=True,
                            scale=scale)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    compute = jnp.promote_types(query.dtype, jnp.float32)
    if not isinstance(scale, (int, float)):  # traced (e.g. learned): fold into q, as chunked
        query, scale = query.astype(compute) * jnp.asarray(scale, compute), 1.0
    auto_q, auto_k = _chunked.default_blocks(tb, sb, is_causal)
    bq = min(tb, auto_q if block_q is None else int(block_q))
    bk = min(sb, auto_k if block_k is None else int(block_k))
    n_q, n_k = -(-tb // bq), -(-sb // bk)
    plans = tuple(_chunked._Plan(tb, sb, bq, bk, n_q, n_k,
                                 Structure(causal=0) if causal else None, False, False,
                                 float(scale))
                  for causal in (False, True))
    q = _chunked._pad_axis(query.astype(compute).reshape(b, tb, hk, h // hk, d), 1,
                           n_q * bq, 0.0)
    k = _chunked._pad_axis(key.astype(compute), 1, n_k * bk, 0.0)
    v = _chunked._pad_axis(value.astype(compute), 1, n_k * bk, 0.0)
    out = _ring(axis_name, bool(is_causal), plans, q, k, v)
    return out[:, :tb].reshape(b, tb, h, dv).astype(query.dtype)


def _kind(source, index):
    """Causal: 0 the key block is wholly visible, 1 it is the device's own block (causal
    mask), 2 it is wholly in the future (skipped)."""
    return jnp.where(source < index, 0, jnp.where(source == index, 1, 2)).astype(jnp.int32)


def _merge(o, lse, o_blk, lse_blk):
    """Combine two partial softmax results by their log-sum-exps.

    A row that saw no key has ``lse == large_negative`` (the finite stand-in for -inf: no
    inf is ever formed, ``jax.debug_infs``), which ``logaddexp`` absorbs exactly; chunked
    marks such rows ``-large_negative`` (its +inf), converted here."""
    neg = _chunked.large_negative(lse.dtype)
    lse_blk = jnp.where(lse_blk == -neg, neg, lse_blk)
    new = jnp.logaddexp(lse, lse_blk)
    safe = jnp.where(new == neg, 0.0, new)
    w_old = jnp.moveaxis(jnp.exp(lse - safe), 3, 1)[..., None]  # [B, Tp, Hk, G, 1]
    w_blk = jnp.moveaxis(jnp.exp(lse_blk - safe), 3, 1)[..., None]
    return o * w_old + o_blk * w_blk, new


def _ring_forward(axis_name, is_causal, plans, q, k, v):
    n = lax.psum(1, axis_name)
    index = lax.axis_index(axis_name)
    rotate = [(i, (i + 1) % n) for i in range(n)]
    dv = v.shape[-1]
    neg = _chunked.large_negative(q.dtype)  # -inf's finite stand-in: no key seen yet

    def visit(i, k, v):
        if not is_causal:
            return _chunked._forward(plans[0], q, k, v, None, None)
        skip = (_chunked._zeros_with_last(q, dv),
                jnp.full_like(jnp.moveaxis(q[..., 0], 1, 3), neg))
        return lax.switch(_kind((index - i) % n, index), [
            lambda: _chunked._forward(plans[0], q, k, v, None, None),
            lambda: _chunked._forward(plans[1], q, k, v, None, None),
            lambda: skip])

    def attend(i, k, v, o, lse):
        return _merge(o, lse, *visit(i, k, v))

    def step(carry, i):
        k, v, o, lse = carry
        o, lse = attend(i, k, v, o, lse)
        k, v = lax.ppermute((k, v), axis_name, rotate)
        return (k, v, o, lse), None

    init = (k, v, _chunked._zeros_with_last(q, dv),
            jnp.full_like(jnp.moveaxis(q[..., 0], 1, 3), neg))
    # n - 1 rotations visit every block: the last one is attended where it arrived.
    (k, v, o, lse), _ = lax.scan(step, init, jnp.arange(n - 1))
    o, lse = attend(n - 1, k, v, o, lse)
    return o, jnp.where(lse == neg, -neg, lse)  # chunked's convention for the backward


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _ring(axis_name, is_causal, plans, q, k, v):
    return _ring_forward(axis_name, is_causal, plans, q, k, v)[0]


def _ring_fwd(axis_name, is_causal, plans, q, k, v):
    o, lse = _ring_forward(axis_name, is_causal, plans, q, k, v)
    return o, (q, k, v, o, lse)


def _ring_bwd(axis_name, is_causal, plans, residuals, do):
    q, k, v, o, lse = residuals
    n = lax.psum(1, axis_name)
    index = lax.axis_index(axis_name)
    rotate = [(i, (i + 1) % n) for i in range(n)]

    def accumulate(i, k, v, dk, dv, dq):
        """Adds this block's gradients into the accumulators (in place, no fresh blocks)."""
        grads = (dq, dk, dv)
        if not is_causal:
            dq, dk, dv = _chunked._backward(plans[0], q, k, v, None, None, o, lse, do, grads)[:3]
            return dk, dv, dq
        dq, dk, dv = lax.switch(_kind((index - i) % n, index), [
            lambda: _chunked._backward(plans[0], q, k, v, None, None, o, lse, do, grads)[:3],
            lambda: _chunked._backward(plans[1], q, k, v, None, None, o, lse, do, grads)[:3],
            lambda: grads])
        return dk, dv, dq

    def step(carry, i):
        k, v, dk, dv, dq = carry
        dk, dv, dq = accumulate(i, k, v, dk, dv, dq)
        # Gradient accumulators travel with their blocks.
        k, v, dk, dv = lax.ppermute((k, v, dk, dv), axis_name, rotate)
        return (k, v, dk, dv, dq), None

    init = (k, v, jnp.zeros_like(k), jnp.zeros_like(v), jnp.zeros_like(q))
    (k, v, dk, dv, dq), _ = lax.scan(step, init, jnp.arange(n - 1))
    dk, dv, dq = accumulate(n - 1, k, v, dk, dv, dq)
    dk, dv = lax.ppermute((dk, dv), axis_name, rotate)  # the n-th rotation brings them home
    return dq, dk, dv


_ring.defvjp(_ring_fwd, _ring_bwd)


def ring_attention(query: Array, key: Array, value: Array, *, mesh: Mesh,
                   axis_name: str = "seq", is_causal: bool = False,
                   scale: float | None = None, block_q: int | None = None,
                   block_k: int | None = None) -> Array:
    """Exact attention with the sequence axis sharded over ``mesh.shape[axis_name]`` devices.

    Args:
      query: ``[B, T, H, D]``; key: ``[B, S, Hk, D]``; value: ``[B, S, Hk, Dv]``. T and S must
        be divisible by the number of devices on ``axis_name``.
      mesh: a ``jax.sharding.Mesh`` with an ``axis_name`` axis (other axes replicate).
      block_q, block_k: tile sizes within a device (default ``ops.chunked.default_blocks``
        of the per-device lengths).

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
                           scale=scale, block_q=block_q, block_k=block_k)
    return _shard_map(fn, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(
        query, key, value)
