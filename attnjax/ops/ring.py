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

Structured attention (``ops.structure``: causal in both alignments, local windows, padding
lengths, segment ids, prefix LM, ``mask_fn``, ``score_fn``) is evaluated in global
positions: each step hands ``ops.chunked`` the global offsets of its query and key blocks,
so its block schedule skips the empty tiles (with ``is_causal``, every tile of a key block
from a later device: the ring keeps turning, the device computes nothing) and masks only
the partial ones. Segment ids of the keys travel around the ring with their block; arrays
``score_fn`` closes over get their gradient summed over the devices.

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
from attnjax.ops import structure as structure_lib
from attnjax.ops.structure import Structure

try:  # jax >= 0.6
    from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

Array = jax.Array


def ring_attention_shard(query: Array, key: Array, value: Array, *, axis_name: str,
                         is_causal: bool | str = False, scale: float | None = None,
                         block_q: int | None = None, block_k: int | None = None,
                         local_window_size: int | tuple[int, int] | None = None,
                         query_seq_lengths: Array | None = None,
                         key_value_seq_lengths: Array | None = None,
                         query_segment_ids: Array | None = None,
                         key_value_segment_ids: Array | None = None,
                         prefix_lengths: Array | None = None,
                         mask_fn=None, score_fn=None) -> Array:
    """Ring attention for code already inside ``shard_map`` over ``axis_name``.

    Args:
      query: this device's ``[B, Tb, H, D]`` block (global positions ``index * Tb ...``).
      key, value: this device's ``[B, Sb, Hk, D]`` / ``[B, Sb, Hk, Dv]`` blocks; Hk divides H.
      block_q, block_k: tile sizes within a device (default ``ops.chunked.default_blocks``).
      query_segment_ids, key_value_segment_ids: this device's ``[B, Tb]`` / ``[B, Sb]``
        blocks of the segment ids; ``query_seq_lengths``, ``key_value_seq_lengths`` and
        ``prefix_lengths`` are the global ``[B]`` (replicated).
      is_causal, local_window_size, mask_fn, score_fn: as ``ring_attention`` (global
        positions).

    Returns:
      ``[B, Tb, H, Dv]``: this query block's output over the whole sequence. Query rows that
      see no key are zero.
    """
    b, tb = query.shape[:2]
    sb = value.shape[-3]
    st = _structure(lax.axis_size(axis_name), b, tb, sb, is_causal, local_window_size,
                    query_seq_lengths, key_value_seq_lengths, query_segment_ids,
                    key_value_segment_ids, prefix_lengths, mask_fn, score_fn)
    bq, bk = _blocks(tb, sb, st, block_q, block_k)
    if st is not None and st.score_fn is not None:
        h, hk = query.shape[2], key.shape[2]
        compute = jnp.promote_types(query.dtype, jnp.float32)
        if axis_name in _varying_axes(lax.axis_index(axis_name)):  # shard_map(check_vma=True)
            # Traced as it runs: scores and positions vary over the axis.
            vary = functools.partial(lax.pcast, axis_name=axis_name, to="varying")
            st, consts = _chunked.convert_score_fn(st, (b, hk, h // hk), bq, bk, compute, vary)
            if any(jnp.issubdtype(c.dtype, jnp.inexact) for c in consts):
                raise ValueError(
                    "ring_attention_shard: a `score_fn` that closes over float arrays (they "
                    "get gradients) needs shard_map(..., check_vma=False), or use "
                    "ops.ring_attention, which wraps shard_map itself")
        else:
            st, consts = _chunked.convert_score_fn(st, (b, hk, h // hk), bq, bk, compute)
    else:
        consts = ()
    return _shard(query, key, value, consts, st, axis_name=axis_name, scale=scale,
                  block_q=bq, block_k=bk)


def _varying_axes(x) -> frozenset:
    """The ``shard_map`` axes ``x`` is typed as varying over (empty without vma checks)."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)
    if vma is None:
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
    return frozenset(vma or ())


def _structure(n, b, t, s, is_causal, window, q_lengths, kv_lengths, q_segments,
               kv_segments, prefix, mask_fn, score_fn) -> Structure | None:
    """The call's ``Structure`` in global positions, validated by ``make_structure`` (at
    trace time, naming the argument) on shapes ``t``, ``s`` that are ``1 / n`` of the
    global lengths: the global ones (``n = 1``) or one device's blocks."""
    if is_causal not in (False, True, None, "top_left", "bottom_right"):
        raise ValueError("ring_attention: `is_causal` must be a bool, 'top_left' or "
                         f"'bottom_right', got {is_causal!r}")
    st = structure_lib.make_structure(
        (b,), t, s, is_causal=bool(is_causal), local_window_size=window,
        query_seq_lengths=q_lengths, key_value_seq_lengths=kv_lengths,
        query_segment_ids=q_segments, key_value_segment_ids=kv_segments,
        prefix_lengths=prefix, mask_fn=mask_fn, score_fn=score_fn)
    if st is not None and is_causal == "bottom_right":
        st = st.replace(causal=n * s - n * t)
    return st


def _blocks(tb: int, sb: int, st: Structure | None, block_q, block_k) -> tuple[int, int]:
    auto_q, auto_k = _chunked.default_blocks(tb, sb, st is not None and st.causal is not None)
    bq = min(tb, auto_q if block_q is None else int(block_q))
    bk = min(sb, auto_k if block_k is None else int(block_k))
    if bq < 1 or bk < 1:
        raise ValueError("ring_attention: `block_q` and `block_k` must be >= 1, got "
                         f"{block_q}, {block_k}")
    return bq, bk


def _shard(query, key, value, consts, st, *, axis_name, scale, block_q, block_k):
    """One device's part: ``st`` is the structure in global positions (``score_fn``
    closure-converted, with ``consts`` its arrays), its segment ids this device's blocks."""
    b, tb, h, d = query.shape
    sb, hk, dv = value.shape[-3:]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    compute = jnp.promote_types(query.dtype, jnp.float32)
    if not isinstance(scale, (int, float)):  # traced (e.g. learned): fold into q, as chunked
        query, scale = query.astype(compute) * jnp.asarray(scale, compute), 1.0
    n_q, n_k = -(-tb // block_q), -(-sb // block_k)
    tp, sp = n_q * block_q, n_k * block_k
    plan = _chunked._Plan(tb, sb, block_q, block_k, n_q, n_k, _chunked._static(st), False,
                          False, float(scale))
    aux = _chunked._aux(st, tb, sb, tp, sp, consts)
    aux["q_offset"] = lax.axis_index(axis_name) * tb
    q = _chunked._pad_axis(query.astype(compute).reshape(b, tb, hk, h // hk, d), 1, tp, 0.0)
    k = _chunked._pad_axis(key.astype(compute), 1, sp, 0.0)
    v = _chunked._pad_axis(value.astype(compute), 1, sp, 0.0)
    out = _ring(axis_name, plan, q, k, v, aux)
    return out[:, :tb].reshape(b, tb, h, dv).astype(query.dtype)


def _at(aux: dict, k_offset, kv_segments) -> dict:
    """``aux`` for the key/value block that starts at global position ``k_offset``."""
    aux = {**aux, "k_offset": k_offset}
    if kv_segments is not None:
        aux["arrays"] = {**aux["arrays"], "kv_segments": kv_segments}
    return aux


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


def _ring_forward(axis_name, plan, q, k, v, aux):
    n = lax.psum(1, axis_name)
    index = lax.axis_index(axis_name)
    rotate = [(i, (i + 1) % n) for i in range(n)]
    dv = v.shape[-1]
    neg = _chunked.large_negative(q.dtype)  # -inf's finite stand-in: no key seen yet

    def attend(i, k, v, seg, o, lse):
        # The block that arrived after i rotations; its empty tiles (all of them for a
        # causal future device) are skipped by chunked's schedule.
        a = _at(aux, ((index - i) % n) * plan.s, seg)
        return _merge(o, lse, *_chunked._forward(plan, q, k, v, None, None, a))

    def step(carry, i):
        k, v, seg, o, lse = carry
        o, lse = attend(i, k, v, seg, o, lse)
        k, v, seg = lax.ppermute((k, v, seg), axis_name, rotate)
        return (k, v, seg, o, lse), None

    seg = aux["arrays"].get("kv_segments")
    init = (k, v, seg, _chunked._zeros_with_last(q, dv),
            jnp.full_like(jnp.moveaxis(q[..., 0], 1, 3), neg))
    # n - 1 rotations visit every block: the last one is attended where it arrived.
    (k, v, seg, o, lse), _ = lax.scan(step, init, jnp.arange(n - 1))
    o, lse = attend(n - 1, k, v, seg, o, lse)
    return o, jnp.where(lse == neg, -neg, lse)  # chunked's convention for the backward


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _ring(axis_name, plan, q, k, v, aux):
    return _ring_forward(axis_name, plan, q, k, v, aux)[0]


def _ring_fwd(axis_name, plan, q, k, v, aux):
    o, lse = _ring_forward(axis_name, plan, q, k, v, aux)
    return o, (q, k, v, aux, o, lse)


def _ring_bwd(axis_name, plan, residuals, do):
    q, k, v, aux, o, lse = residuals
    n = lax.psum(1, axis_name)
    index = lax.axis_index(axis_name)
    rotate = [(i, (i + 1) % n) for i in range(n)]

    def accumulate(i, k, v, seg, dk, dv, dq, dc):
        """Adds this block's gradients into the accumulators (in place, no fresh blocks)."""
        a = _at(aux, ((index - i) % n) * plan.s, seg)
        dq, dk, dv, _, dc_blk = _chunked._backward(plan, q, k, v, None, None, o, lse, do,
                                                   (dq, dk, dv), aux=a)
        dc = tuple(None if x is None else x + y for x, y in zip(dc, dc_blk, strict=True))
        return dk, dv, dq, dc

    def step(carry, i):
        k, v, seg, dk, dv, dq, dc = carry
        dk, dv, dq, dc = accumulate(i, k, v, seg, dk, dv, dq, dc)
        # Gradient accumulators travel with their blocks.
        k, v, seg, dk, dv = lax.ppermute((k, v, seg, dk, dv), axis_name, rotate)
        return (k, v, seg, dk, dv, dq, dc), None

    seg = aux["arrays"].get("kv_segments")
    dc = _chunked._zero_cotangents(aux["consts"])
    init = (k, v, seg, jnp.zeros_like(k), jnp.zeros_like(v), jnp.zeros_like(q), dc)
    (k, v, seg, dk, dv, dq, dc), _ = lax.scan(step, init, jnp.arange(n - 1))
    dk, dv, dq, dc = accumulate(n - 1, k, v, seg, dk, dv, dq, dc)
    dk, dv = lax.ppermute((dk, dv), axis_name, rotate)  # the n-th rotation brings them home
    daux = jax.tree_util.tree_map(lambda _: None, {**aux, "consts": ()})
    daux["consts"] = dc
    return dq, dk, dv, daux


_ring.defvjp(_ring_fwd, _ring_bwd)


def ring_attention(query: Array, key: Array, value: Array, *, mesh: Mesh,
                   axis_name: str = "seq", is_causal: bool | str = False,
                   scale: float | None = None, block_q: int | None = None,
                   block_k: int | None = None,
                   local_window_size: int | tuple[int, int] | None = None,
                   query_seq_lengths: Array | None = None,
                   key_value_seq_lengths: Array | None = None,
                   query_segment_ids: Array | None = None,
                   key_value_segment_ids: Array | None = None,
                   prefix_lengths: Array | None = None,
                   mask_fn=None, score_fn=None) -> Array:
    """Exact attention with the sequence axis sharded over ``mesh.shape[axis_name]`` devices.

    The structured arguments are those of ``ops.dot_product_attention`` (same names and
    semantics, global positions), evaluated tile by tile: no device forms a ``[T, S]`` or
    ``[T/n, S/n]`` array, and tiles they mask entirely are skipped.

    Args:
      query: ``[B, T, H, D]``; key: ``[B, S, Hk, D]``; value: ``[B, S, Hk, Dv]``. T and S must
        be divisible by the number of devices on ``axis_name``.
      mesh: a ``jax.sharding.Mesh`` with an ``axis_name`` axis (other axes replicate).
      is_causal: ``False``, ``True``/``"top_left"`` (query ``i`` sees keys ``j <= i``, as
        ``jax.nn``) or ``"bottom_right"`` (``j <= i + S - T``).
      block_q, block_k: tile sizes within a device (default ``ops.chunked.default_blocks``
        of the per-device lengths).
      local_window_size: int or ``(left, right)``: query ``i`` sees ``i - left <= j <= i +
        right``.
      query_seq_lengths, key_value_seq_lengths: ``[B]`` int: positions at or beyond are
        padding (padded queries give zeros).
      query_segment_ids, key_value_segment_ids: ``[B, T]`` / ``[B, S]`` int (document
        packing: a query sees keys of its own segment); the key ids default to the query
        ids when T == S.
      prefix_lengths: ``[B]`` int, with ``is_causal``: keys ``j < prefix_lengths[b]`` are
        visible to every query (prefix LM).
      mask_fn, score_fn: ``mask_fn(b, h, q, k) -> bool`` and ``score_fn(score, b, h, q, k)
        -> score`` on broadcast index arrays (see ``ops.structure``); arrays ``score_fn``
        closes over get gradients.

    Returns:
      ``[B, T, H, Dv]``, sharded like ``query`` (length over ``axis_name``). Query rows that
      see no key are zero.
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
    b, t, s = query.shape[0], query.shape[1], key.shape[1]
    # Validated on the global shapes, where the error names what the user passed.
    st = _structure(1, b, t, s, is_causal, local_window_size, query_seq_lengths,
                    key_value_seq_lengths, query_segment_ids, key_value_segment_ids,
                    prefix_lengths, mask_fn, score_fn)
    bq, bk = _blocks(t // n, s // n, st, block_q, block_k)
    compute = jnp.promote_types(query.dtype, jnp.float32)
    # Closure-converted here, outside shard_map: the arrays score_fn closes over enter it as
    # replicated inputs, whose gradients shard_map sums over the devices. Without vma
    # checks (check_vma=False) score_fn, traced outside, runs unchanged on every device.
    h, hk = query.shape[2], key.shape[2]
    st, consts = _chunked.convert_score_fn(st, (b, hk, h // hk), bq, bk, compute)
    seq, rep = P(None, axis_name), P()
    arrays = {} if st is None else {k: v for k, v in st.arrays.items() if v is not None}
    array_specs = {k: (seq if k in ("q_segments", "kv_segments") else rep) for k in arrays}
    spec = P(None, axis_name, None, None)

    def shard(q, k, v, consts, arrays):
        local = None if st is None else st.replace(**arrays)
        return _shard(q, k, v, consts, local, axis_name=axis_name, scale=scale, block_q=bq,
                      block_k=bk)

    return _shard_map(shard, mesh=mesh,
                      in_specs=(spec, spec, spec, tuple(rep for _ in consts), array_specs),
                      out_specs=spec, check_vma=False)(query, key, value, consts, arrays)
