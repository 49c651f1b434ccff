"""Memory-efficient ("chunked") attention: never materialise the ``[T, S]`` score matrix.

Rabe & Staats (2021), "Self-attention does not need O(n^2) memory", with the blocking of
FlashAttention-2 (Dao 2023). Queries are cut into blocks of ``block_q`` rows and keys/values
into blocks of ``block_k`` columns. For each query block the forward pass walks the key
blocks with an online softmax (a running row maximum ``m``, normaliser ``l`` and output
accumulator, rescaled when ``m`` grows), and keeps only ``O [T, H, Dv]`` and the row
log-sum-exp ``lse [H, T]``. The backward pass (a ``jax.custom_vjp``) recomputes each block's
probabilities from ``lse`` instead of storing them, so memory grows linearly in ``T`` and ``S``
while the FLOPs stay those of attention (7 block matmuls for forward + backward instead of 6).

Causal key blocks that lie entirely above the diagonal are not computed: the loops over key
blocks (forward) and over query blocks (backward) stop at the diagonal.

On the CPU this is also *faster* than materialising the scores once they leave the cache:
a ``block_q x block_k`` block per head stays in L2/L3, and every matmul is laid out so the
contraction runs over the last axis of the left operand (the backward pass works on the
transposed block ``[S, T]`` for that reason), which XLA:CPU hands to its fast matmul library.

Layout as everywhere in attnjax: ``query [..., T, H, D]``, ``key [..., S, Hk, D]``,
``value [..., S, Hk, Dv]``, ``mask``/``bias`` broadcastable to ``[..., H, T, S]``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attnjax.ops import structure as structure_lib
from attnjax.ops.structure import Structure

Array = jax.Array


class _Plan(NamedTuple):
    """Static description of one call (hashable: it is a ``nondiff`` argument)."""

    t: int  # real query length
    s: int  # real key length
    block_q: int
    block_k: int
    n_q: int  # number of query blocks (padded length = n_q * block_q)
    n_k: int
    # The static part of the call's ``Structure`` (``causal``, ``window``, the functions;
    # array fields hold True where the call has that array, which travels in ``aux``), or None.
    spec: Structure | None
    has_mask: bool
    has_bias: bool
    scale: float  # applied to each query block; 1.0 when a traced scale was folded into q


def large_negative(dtype) -> np.ndarray:
    """A finite stand-in for ``-inf`` in ``dtype``: ``-0.7 * finfo(dtype).max``, the value of
    ``jax.nn.dot_product_attention``.

    Masked scores and the running maxima of rows that have seen no key yet take this value
    instead of ``-inf``, so no step ever computes an inf (``jax.debug_infs(True)`` holds) while
    ``exp()`` of it minus any realistic logit is still exactly 0. The headroom of 0.3 * max
    keeps ``large_negative - logit`` finite. Its negation marks the log-sum-exp of a row that
    saw no key (the old ``+inf``).
    """
    return np.asarray(-0.7 * float(jnp.finfo(dtype).max), dtype)


def default_blocks(t: int, s: int, is_causal: bool) -> tuple[int, int]:
    """Block sizes tuned on a 2-core Zen 5 CPU (fp32, H=8, D=64; see experiments/scaling).

    Query blocks of 256 rows keep one head's ``256 x block_k`` score block in L2. Without a
    causal mask one key block spans up to 1024 keys (fewer online-softmax rescales); with
    one, 512-key blocks let the loops skip the upper triangle at a fine grain.
    """
    block_q = min(256, t)
    block_k = min(512 if is_causal else 1024, s)
    return block_q, block_k


def _normalise(x, batch: tuple[int, ...], h: int, hk: int):
    """``[..., H|1, T|1, S|1]`` -> ``[B|1, Hk|1, G|1, T|1, S|1]`` with B the flattened batch."""
    x = jnp.reshape(x, (1,) * (len(batch) + 3 - x.ndim) + tuple(x.shape))
    lead = x.shape[: len(batch)]
    if all(d == 1 for d in lead):
        x = x.reshape(1, *x.shape[len(batch) :])
    else:
        x = jnp.broadcast_to(x, (*batch, *x.shape[len(batch) :]))
        x = x.reshape(-1, *x.shape[len(batch) :])
    hx, tx, sx = x.shape[1:]
    if hx == 1:
        return x.reshape(x.shape[0], 1, 1, tx, sx)
    return x.reshape(x.shape[0], hk, h // hk, tx, sx)


def _pad_axis(x, axis: int, size: int, value):
    if x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _slice_ts(x, i, j, plan: _Plan):
    """Block ``(i, j)`` of a 5-d mask/bias ``[.., T|1, S|1]``; broadcast axes stay 1."""
    if x is None:
        return None
    starts = [0, 0, 0, 0, 0]
    sizes = list(x.shape)
    if x.shape[3] != 1:
        starts[3], sizes[3] = i * plan.block_q, plan.block_q
    if x.shape[4] != 1:
        starts[4], sizes[4] = j * plan.block_k, plan.block_k
    return lax.dynamic_slice(x, starts, sizes)


def _static(st: Structure | None) -> Structure | None:
    """``st`` with every array replaced by True: hashable, for the plan."""
    if st is None:
        return None
    return st.replace(**{k: (None if v is None else True) for k, v in st.arrays.items()})


def _aux(st: Structure | None, t: int, s: int, tp: int, sp: int, consts=()) -> dict:
    """The arrays of ``st`` (segment ids padded to the blocked lengths) and ``consts`` (the
    arrays ``score_fn`` closes over), the traced argument that goes with ``plan.spec``."""
    arrays = {} if st is None else {k: v for k, v in st.arrays.items() if v is not None}
    if "q_segments" in arrays:
        arrays["q_segments"] = jnp.pad(arrays["q_segments"], ((0, 0), (0, tp - t)), mode="edge")
        arrays["kv_segments"] = jnp.pad(arrays["kv_segments"], ((0, 0), (0, sp - s)),
                                        mode="edge")
    return {"arrays": arrays, "consts": tuple(consts), "q_offset": 0, "k_offset": 0}


def _structure(plan: _Plan, aux) -> Structure | None:
    """The call's ``Structure`` with its arrays (``aux``) back in place."""
    if plan.spec is None:
        return None
    return plan.spec.replace(**aux["arrays"])


def _indices(i, j, plan: _Plan, aux, hk: int, g: int):
    """Rank-5 index arrays of block ``(i, j)`` in the forward layout ``[B, Hk, G, bq, bk]``:
    batch, query head, absolute query and key positions."""
    bq, bk = plan.block_q, plan.block_k
    rows = aux["q_offset"] + i * bq + lax.broadcasted_iota(jnp.int32, (1, 1, 1, bq, 1), 3)
    cols = aux["k_offset"] + j * bk + lax.broadcasted_iota(jnp.int32, (1, 1, 1, 1, bk), 4)
    heads = lax.broadcasted_iota(jnp.int32, (1, hk, g, 1, 1), 1) * g \
        + lax.broadcasted_iota(jnp.int32, (1, hk, g, 1, 1), 2)
    return rows, cols, heads


def _batch_index(nb: int):
    return lax.broadcasted_iota(jnp.int32, (nb, 1, 1, 1, 1), 0)


def _keep(i, j, mask_blk, plan: _Plan, aux=None, shape=None):
    """Boolean 5-d ``[.., block_q, block_k]`` of kept scores, or None when all are kept.

    ``shape``: ``(B, Hk, G)`` of the scores (needed with a structure). Always of rank 5,
    like the score blocks: no implicit rank promotion (it runs under
    ``jax.numpy_rank_promotion("raise")``)."""
    keep = mask_blk
    cols = j * plan.block_k + lax.broadcasted_iota(jnp.int32, (1, 1, 1, 1, plan.block_k), 4)
    st = None if aux is None else _structure(plan, aux)
    if st is not None and st.masks:
        nb, hk, g = shape
        q_abs, k_abs, heads = _indices(i, j, plan, aux, hk, g)
        q_seg = kv_seg = None
        if st.q_segments is not None:
            q_seg = lax.dynamic_slice_in_dim(st.q_segments, i * plan.block_q, plan.block_q,
                                             axis=1).reshape(nb, 1, 1, plan.block_q, 1)
            kv_seg = lax.dynamic_slice_in_dim(st.kv_segments, j * plan.block_k, plan.block_k,
                                              axis=1).reshape(nb, 1, 1, 1, plan.block_k)
        structured = structure_lib.keep(st, _batch_index(nb), heads, q_abs, k_abs, q_seg, kv_seg)
        keep = structured if keep is None else jnp.logical_and(keep, structured)
    if plan.n_k * plan.block_k != plan.s:
        keep = cols < plan.s if keep is None else jnp.logical_and(keep, cols < plan.s)
    return keep


def _schedule(plan: _Plan, aux, shape):
    """``(visit, count, full)`` of ``structure.block_schedule`` for this plan."""
    nb, hk, g = shape
    st = _structure(plan, aux)
    return structure_lib.block_schedule(
        st, t=plan.t, s=plan.s, block_q=plan.block_q, block_k=plan.block_k, n_q=plan.n_q,
        n_k=plan.n_k, has_dense_mask=plan.has_mask, q_offset=aux["q_offset"],
        k_offset=aux["k_offset"], nb=nb, h=hk * g, hk=hk)


def _score_fn(plan: _Plan, aux, i, j, shape):
    """``score -> score_fn(score, batch, head, q, k, *consts)`` of block ``(i, j)``
    (forward layout), or None."""
    if plan.spec is None or plan.spec.score_fn is None:
        return None
    nb, hk, g = shape
    q_abs, k_abs, heads = _indices(i, j, plan, aux, hk, g)
    fn = plan.spec.score_fn
    return lambda score, consts: fn(score, _batch_index(nb), heads, q_abs, k_abs, *consts)


def _query_block(q, i, plan: _Plan):
    """Scaled query block ``i``: ``[B, Tp, Hk, G, D]`` -> ``[B, Hk, G, block_q, D]``."""
    qb = lax.dynamic_slice_in_dim(q, i * plan.block_q, plan.block_q, axis=1)
    return jnp.transpose(qb, (0, 2, 3, 1, 4)) * jnp.asarray(plan.scale, q.dtype)


def _kv_block(x, j, plan: _Plan):
    """Key/value block ``j``: ``[B, Sp, Hk, D]`` -> ``[B, Hk, block_k, D]``."""
    xb = lax.dynamic_slice_in_dim(x, j * plan.block_k, plan.block_k, axis=1)
    return jnp.transpose(xb, (0, 2, 1, 3))


def _add_kv_block(x, xb, j, plan: _Plan):
    """``x[:, block j] += xb`` for ``xb: [B, Hk, block_k, D]`` and ``x: [B, Sp, Hk, D]``."""
    old = lax.dynamic_slice_in_dim(x, j * plan.block_k, plan.block_k, axis=1)
    new = old + jnp.transpose(xb, (0, 2, 1, 3))
    return lax.dynamic_update_slice_in_dim(x, new, j * plan.block_k, axis=1)


def _zeros_with_last(x, size: int):
    """Zeros shaped like ``x`` but with last axis ``size``. Derived from ``x`` (not
    ``jnp.zeros(shape)``) so that they carry its sharding: under explicit sharding a buffer
    and the blocks written into it must agree."""
    return jnp.broadcast_to(jnp.zeros_like(x[..., :1]), (*x.shape[:-1], size))


def _masks_scores(plan: _Plan) -> bool:
    """Whether some scores of some block are masked (a dense mask, a structure that masks,
    or the padded tail of the keys)."""
    return (plan.has_mask or (plan.spec is not None and plan.spec.masks)
            or plan.n_k * plan.block_k != plan.s)


def _visits(plan: _Plan, aux, shape):
    """``(visit, count, full, fixed)``: the schedule, and whether every query block visits
    all ``n_k`` key blocks (then the loops have a static trip count)."""
    fixed = plan.spec is None and not plan.has_mask
    visit, count, full = _schedule(plan, aux, shape)
    return visit, count, full, fixed


def _scores(plan, aux, i, j, t_, full, s, mask, shape, layout_t=False):
    """Applies ``score_fn`` and the masks to the scores ``s`` of block ``(i, j)`` (``t_``:
    its place in ``visit``; ``full[i, t_]`` blocks skip the mask). Returns ``(scores,
    pullback)``: ``pullback(ds)`` maps the cotangent of the returned scores to those of
    ``s`` and of ``score_fn``'s consts (None without ``score_fn``).

    ``layout_t``: ``s`` is the backward pass's transposed block ``[B, Hk, bk, G, bq]``;
    ``score_fn`` and the masks are evaluated in the forward layout and moved back."""
    neg = large_negative(s.dtype)
    to_fwd = (lambda x: jnp.moveaxis(x, 2, 4)) if layout_t else (lambda x: x)  # noqa: E731
    to_out = (lambda x: jnp.moveaxis(x, 4, 2)) if layout_t else (lambda x: x)  # noqa: E731
    pullback = None
    fn = _score_fn(plan, aux, i, j, shape)
    if fn is not None:
        modified, vjp = jax.vjp(fn, to_fwd(s), aux["consts"])
        s = to_out(modified)

        def pullback(ds):
            d_scores, d_consts = vjp(to_fwd(ds))
            return to_out(d_scores), d_consts
    if _masks_scores(plan):
        def masked(x):
            keep = _keep(i, j, _slice_ts(mask, i, j, plan), plan, aux, shape)
            return jnp.where(to_out(keep), x, neg)
        s = lax.cond(full[i, t_], lambda x: x, masked, s)
    return s, pullback


def _forward(plan: _Plan, q, k, v, mask, bias, aux=None):
    """q: [B, Tp, Hk, G, D], k: [B, Sp, Hk, D], v: [B, Sp, Hk, Dv] (the caller's layouts).
    ``aux``: the traced part of the structure (``_aux``; default none).

    Returns o: [B, Tp, Hk, G, Dv] and lse: [B, Hk, G, Tp] (``-large_negative``, the finite
    stand-in for +inf, on rows that see no key).
    """
    aux = _aux(None, plan.t, plan.s, 0, 0) if aux is None else aux
    dv = v.shape[-1]
    bq = plan.block_q
    neg = large_negative(q.dtype)
    shape = q.shape[0], q.shape[2], q.shape[3]
    visit, count, full, fixed = _visits(plan, aux, shape)

    def block(i, qb, t_, carry):
        m, norm, acc = carry
        j = visit[i, t_]
        kb, vb = _kv_block(k, j, plan), _kv_block(v, j, plan)
        s = jnp.einsum("bkgqd,bksd->bkgqs", qb, kb)
        if bias is not None:
            s = s + _slice_ts(bias, i, j, plan)
        s, _ = _scores(plan, aux, i, j, t_, full, s, mask, shape)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        m_safe = jnp.where(m_new == neg, 0.0, m_new)  # rows that saw no key yet
        p = jnp.exp(s - m_safe[..., None])
        correction = jnp.exp(m - m_safe)
        norm = norm * correction + jnp.sum(p, axis=-1)
        acc = acc * correction[..., None] + jnp.einsum("bkgqs,bksd->bkgqd", p, vb)
        return m_new, norm, acc

    def query_block(i, carry):
        o, lse = carry
        qb = _query_block(q, i, plan)
        init = (
            jnp.full_like(qb[..., 0], neg),
            jnp.zeros_like(qb[..., 0]),
            _zeros_with_last(qb, dv),
        )
        if plan.n_k == 1:
            m, norm, acc = block(i, qb, 0, init)
        else:
            m, norm, acc = lax.fori_loop(
                0, plan.n_k if fixed else count[i], functools.partial(block, i, qb), init
            )
        seen = norm > 0
        ob = acc / jnp.where(seen, norm, 1.0)[..., None]
        lseb = jnp.where(seen, m + jnp.log(jnp.where(seen, norm, 1.0)), -neg)
        o = lax.dynamic_update_slice_in_dim(o, jnp.transpose(ob, (0, 3, 1, 2, 4)), i * bq, 1)
        lse = lax.dynamic_update_slice_in_dim(lse, lseb, i * bq, axis=3)
        return o, lse

    # Output blocks are written in place into [B, Tp, ...] buffers: no stacked copy.
    init = (_zeros_with_last(q, dv), jnp.transpose(jnp.zeros_like(q[..., 0]), (0, 2, 3, 1)))
    if plan.n_q == 1:
        return query_block(0, init)
    return lax.fori_loop(0, plan.n_q, query_block, init)


def _zero_cotangents(consts):
    """Zeros for the inexact consts of ``score_fn`` (None for integer ones: no gradient)."""
    return tuple(jnp.zeros_like(c) if jnp.issubdtype(c.dtype, jnp.inexact) else None
                 for c in consts)


def _backward(plan: _Plan, q, k, v, mask, bias, o, lse, do, init=None, aux=None):
    """Gradients of ``sum(o * do)``; shapes as in ``_forward``. Returns dq, dk, dv, dbias
    and the cotangents of ``score_fn``'s consts (a tuple; None for integer ones).

    ``init``: ``(dq, dk, dv)`` to add the gradients to (``ops.ring`` accumulates over its
    steps in place); default zeros."""
    aux = _aux(None, plan.t, plan.s, 0, 0) if aux is None else aux
    bq = plan.block_q
    scale = jnp.asarray(plan.scale, q.dtype)
    neg = large_negative(q.dtype)
    delta = jnp.transpose(jnp.sum(do * o, axis=-1), (0, 2, 3, 1))  # [B, Hk, G, Tp]
    shape = q.shape[0], q.shape[2], q.shape[3]
    visit, count, full, fixed = _visits(plan, aux, shape)

    def block(i, qb, dob, lseb, deltab, t_, carry):
        dq_t, dk, dvv, dbias, dconsts = carry
        j = visit[i, t_]
        kb, vb = _kv_block(k, j, plan), _kv_block(v, j, plan)
        # Transposed block [B, Hk, block_k, G, block_q]: every matmul below contracts the last
        # axis of its left operand (XLA:CPU's fast path; a transposed left operand is ~3x slower).
        s_t = jnp.einsum("bksd,bkgqd->bksgq", kb, qb)
        if bias is not None:
            s_t = s_t + jnp.moveaxis(_slice_ts(bias, i, j, plan), 4, 2)
        # Masked before exp() (inside _scores): a masked score far above the row's lse must
        # not overflow.
        s_t, pullback = _scores(plan, aux, i, j, t_, full, s_t, mask, shape, layout_t=True)
        # Rows that saw no key carry lse = -neg: subtract 0 there (their scores are all neg,
        # so exp() is 0), which keeps neg - lse from overflowing to -inf (jax.debug_infs).
        p_t = jnp.exp(s_t - jnp.where(lseb == -neg, 0.0, lseb)[:, :, None])
        dp_t = jnp.einsum("bksd,bkgqd->bksgq", vb, dob)
        ds_t = p_t * (dp_t - deltab[:, :, None])
        dvv_blk = jnp.einsum("bksgq,bkgqd->bksd", p_t, dob)
        if pullback is not None:
            ds_t, d_c = pullback(ds_t)
            dconsts = tuple(None if a is None else a + b.astype(a.dtype)
                            for a, b in zip(dconsts, d_c, strict=True))
        dk_blk = jnp.einsum("bksgq,bkgqd->bksd", ds_t, qb)
        dq_t = dq_t + jnp.einsum("bkds,bksgq->bkdgq", jnp.swapaxes(kb, 2, 3), ds_t)
        dk = _add_kv_block(dk, dk_blk, j, plan)
        dvv = _add_kv_block(dvv, dvv_blk, j, plan)
        if dbias is not None:
            dbias = _add_bias_grad(dbias, jnp.moveaxis(ds_t, 2, 4), i, j, plan)
        return dq_t, dk, dvv, dbias, dconsts

    def query_block(i, carry):
        dq, dk, dvv, dbias, dconsts = carry
        qb = _query_block(q, i, plan)
        dob = jnp.transpose(lax.dynamic_slice_in_dim(do, i * bq, bq, axis=1), (0, 2, 3, 1, 4))
        lseb = lax.dynamic_slice_in_dim(lse, i * bq, bq, axis=3)
        deltab = lax.dynamic_slice_in_dim(delta, i * bq, bq, axis=3)
        dq_t = jnp.zeros_like(jnp.transpose(qb, (0, 1, 4, 2, 3)))
        body = functools.partial(block, i, qb, dob, lseb, deltab)
        state = (dq_t, dk, dvv, dbias, dconsts)
        if plan.n_k == 1:
            dq_t, dk, dvv, dbias, dconsts = body(0, state)
        else:
            dq_t, dk, dvv, dbias, dconsts = lax.fori_loop(
                0, plan.n_k if fixed else count[i], body, state)
        # d(loss)/d(q) = scale * d(loss)/d(scaled q); [B, Hk, D, G, bq] -> [B, bq, Hk, G, D]
        dq_b = jnp.transpose(dq_t, (0, 4, 1, 3, 2)) * scale
        if init is not None:
            dq_b = dq_b + lax.dynamic_slice_in_dim(dq, i * bq, bq, axis=1)
        dq = lax.dynamic_update_slice_in_dim(dq, dq_b, i * bq, axis=1)
        return dq, dk, dvv, dbias, dconsts

    dbias = None if bias is None else jnp.zeros_like(bias)
    dconsts = _zero_cotangents(aux["consts"])
    if init is None:
        carry = (jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v), dbias, dconsts)
    else:
        carry = (*init, dbias, dconsts)
    if plan.n_q == 1:
        return query_block(0, carry)
    return lax.fori_loop(0, plan.n_q, query_block, carry)


def _add_bias_grad(dbias, ds, i, j, plan: _Plan):
    """Adds block ``ds [B, Hk, G, block_q, block_k]`` into ``dbias`` (its broadcast shape)."""
    reduce = tuple(a for a in range(5) if dbias.shape[a] == 1)
    ds = jnp.sum(ds, axis=reduce, keepdims=True)
    starts = (
        0, 0, 0,
        i * plan.block_q if dbias.shape[3] != 1 else 0,
        j * plan.block_k if dbias.shape[4] != 1 else 0,
    )
    old = lax.dynamic_slice(dbias, starts, ds.shape)
    return lax.dynamic_update_slice(dbias, old + ds, starts)


def convert_score_fn(st: Structure | None, shape, block_q: int, block_k: int, dtype,
                     vary=None):
    """``(st, consts)``: ``st.score_fn`` closure-converted (``jax.closure_convert``) so that
    the arrays it closes over become explicit inputs ``consts`` of the custom VJPs and get
    gradients (a learned relative-position table, ALiBi slopes being trained).

    ``shape``: ``(B, Hk, G)`` of the score blocks; the function is traced once on blocks
    of the forward layout ``[B, Hk, G, block_q, block_k]``. ``vary``: applied to the example
    score and positions (``ops.ring`` types them as varying over its ``shard_map`` axis, as
    they are when the function runs)."""
    if st is None or st.score_fn is None:
        return st, ()
    nb, hk, g = shape
    vary = (lambda x: x) if vary is None else vary  # noqa: E731
    example = (vary(jnp.zeros((nb, hk, g, block_q, block_k), dtype)),
               jnp.zeros((nb, 1, 1, 1, 1), jnp.int32), jnp.zeros((1, hk, g, 1, 1), jnp.int32),
               vary(jnp.zeros((1, 1, 1, block_q, 1), jnp.int32)),
               vary(jnp.zeros((1, 1, 1, 1, block_k), jnp.int32)))
    converted, consts = jax.closure_convert(st.score_fn, *example)
    return st.replace(score_fn=converted), tuple(consts)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(plan, q, k, v, mask, bias, aux):
    """``(o, lse)``; the log-sum-exp is returned for ``return_residual`` and gets no
    gradient (its cotangent is ignored, as ``jax.nn``'s stop_gradient on it)."""
    return _forward(plan, q, k, v, mask, bias, aux)


def _attention_fwd(plan, q, k, v, mask, bias, aux):
    o, lse = _forward(plan, q, k, v, mask, bias, aux)
    return (o, lse), (q, k, v, mask, bias, aux, o, lse)


def _attention_bwd(plan, residuals, cotangents):
    q, k, v, mask, bias, aux, o, lse = residuals
    do, _ = cotangents
    dq, dk, dv, dbias, dconsts = _backward(plan, q, k, v, mask, bias, o, lse, do, aux=aux)
    daux = jax.tree_util.tree_map(lambda _: None, {**aux, "consts": ()})
    daux["consts"] = dconsts
    return dq, dk, dv, None, dbias, daux


_attention.defvjp(_attention_fwd, _attention_bwd)


def chunked_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    bias: Array | None = None,
    mask: Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    structure: Structure | None = None,
    return_residual: bool = False,
) -> Array | tuple[Array, Array]:
    """Exact attention in ``O(T + S)`` memory (no ``[T, S]`` buffer, forward or backward).

    Arguments are those of ``attnjax.ops.dot_product_attention`` (which validates them and
    dispatches here for ``implementation="chunked"``):

    Args:
      query: ``[..., T, H, D]``.
      key: ``[..., S, Hk, D]``, Hk divides H.
      value: ``[..., S, Hk, Dv]``.
      bias: float, broadcastable to ``[..., H, T, S]``; differentiable.
      mask: bool, broadcastable to ``[..., H, T, S]``; True = attend.
      is_causal: query ``i`` sees keys ``j <= i``; key blocks above the diagonal are skipped.
      scale: logit scale, default ``1 / sqrt(D)``.
      block_q, block_k: block sizes (default ``default_blocks``); T and S need not be
        multiples of them (the tail block is padded and masked).
      structure: an ``ops.structure.Structure`` (``dot_product_attention`` builds it from
        its window, lengths, segment ids, prefix, ``mask_fn`` and ``score_fn`` arguments):
        empty ``(query block, key block)`` pairs are skipped, full ones are not masked, and
        no ``[T, S]`` array is formed. Arrays ``score_fn`` closes over get gradients.
      return_residual: also return the log-sum-exp of each row's kept scaled scores,
        ``[..., T, H]`` (as ``jax.nn``; no gradient flows through it; rows that see no key
        hold ``large_negative``).

    Returns:
      ``[..., T, H, Dv]`` in the dtype of ``query`` (and the residual). Rows that see no key
      are zero, with zero gradients. The softmax statistics and accumulators are float32
      (float64 for float64).
    """
    *batch, t, h, d = query.shape
    s, hk, dv = value.shape[-3:]
    g = h // hk
    if is_causal and (structure is None or structure.causal is None):
        structure = (structure or Structure()).replace(causal=0)
    is_causal = structure is not None and structure.causal is not None
    auto_q, auto_k = default_blocks(t, s, is_causal)
    block_q = auto_q if block_q is None else int(block_q)
    block_k = auto_k if block_k is None else int(block_k)
    if block_q < 1 or block_k < 1:
        raise ValueError(
            f"chunked_attention: `block_q` and `block_k` must be >= 1, got {block_q}, {block_k}"
        )
    block_q, block_k = min(block_q, t), min(block_k, s)
    n_q, n_k = -(-t // block_q), -(-s // block_k)
    tp, sp = n_q * block_q, n_k * block_k
    compute = jnp.promote_types(query.dtype, jnp.float32)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    nb = int(np.prod(batch, dtype=np.int64))

    # Inputs stay in the caller's layout (free reshapes to [B, T, Hk, G, D], [B, S, Hk, D]):
    # blocks are transposed as they are read, so no full-size copy is made.
    q = query.astype(compute).reshape(nb, t, hk, g, d)
    if isinstance(scale, (int, float)):
        static_scale = float(scale)
    else:  # a traced scale (e.g. a learned temperature): fold it into q so it gets a gradient
        q, static_scale = q * jnp.asarray(scale).astype(compute), 1.0
    k = key.astype(compute).reshape(nb, s, hk, d)
    v = value.astype(compute).reshape(nb, s, hk, dv)
    q = _pad_axis(q, 1, tp, 0.0)
    k, v = _pad_axis(k, 1, sp, 0.0), _pad_axis(v, 1, sp, 0.0)
    if mask is not None:
        mask = _normalise(mask, tuple(batch), h, hk)
        mask = _pad_axis(_pad_axis(mask, 3, tp, False), 4, sp, False)
    if bias is not None:
        bias = _normalise(bias.astype(compute), tuple(batch), h, hk)
        bias = _pad_axis(_pad_axis(bias, 3, tp, 0.0), 4, sp, 0.0)
    structure, consts = convert_score_fn(structure, (nb, hk, g), block_q, block_k, compute)
    aux = _aux(structure, t, s, tp, sp, consts)
    plan = _Plan(
        t, s, block_q, block_k, n_q, n_k, _static(structure),
        mask is not None, bias is not None, static_scale,
    )
    o, lse = _attention(plan, q, k, v, mask, bias, aux)
    o = o[:, :t].reshape(*batch, t, h, dv).astype(query.dtype)
    if not return_residual:
        return o
    lse = jnp.transpose(lse, (0, 3, 1, 2))[:, :t].reshape(*batch, t, h)
    neg = large_negative(lse.dtype)
    lse = lax.stop_gradient(jnp.where(lse == -neg, neg, lse))
    return o, lse
