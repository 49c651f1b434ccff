"""Scaled dot-product attention: ``softmax(Q K^T / sqrt(d_k)) V``.

Layout everywhere is the one of ``jax.nn.dot_product_attention``:

* ``query``: ``[..., T, H, D]``  (batch dims ``...``, T query positions, H heads, D head dim)
* ``key``:   ``[..., S, Hk, D]`` (S key positions, Hk key/value heads; Hk divides H)
* ``value``: ``[..., S, Hk, Dv]``
* ``mask`` (bool, True = keep) and ``bias`` broadcast to ``[..., H, T, S]``.

When ``Hk < H`` this is grouped-query attention (Ainslie et al. 2023); ``Hk == 1`` is
multi-query attention (Shazeer 2019). Query head ``h`` reads key/value head ``h // (H // Hk)``,
the same grouping as ``jax.nn.dot_product_attention``.

All argument checks happen in Python on static shapes, so a bad call fails at trace time
with a message naming the argument, instead of deep inside XLA.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from attnjax.ops import structure as structure_lib
from attnjax.ops.chunked import chunked_attention, large_negative
from attnjax.ops.masks import causal_mask
from attnjax.ops.structure import Structure

Array = jax.Array

IMPLEMENTATIONS = ("xla", "chunked", "flash", "cudnn")

# On the CPU the materialised [T, S] scores fall out of the cache from about 1024 x 1024 per
# head, and the blocked implementation wins (experiments/scaling.py); below it XLA's fused
# einsum-softmax-einsum is as fast and compiles quicker.
_CHUNKED_FROM_SCORES = 512 * 512


def _shape_str(x) -> str:
    return "[" + ", ".join(str(d) for d in np.shape(x)) + "]"


def _with_rank(x, ndim: int):
    """``x`` with leading size-1 axes up to rank ``ndim``: broadcasting by explicit reshape, so
    that nothing relies on implicit rank promotion (``jax.numpy_rank_promotion("raise")``)."""
    extra = ndim - np.ndim(x)
    return x if extra <= 0 else jnp.reshape(x, (1,) * extra + tuple(np.shape(x)))


def _softmax_dtype(dtype) -> jnp.dtype:
    # Softmax statistics in at least float32: exp() of bf16/fp16 logits loses most of the
    # mass and fp16 overflows at 65504 (Micikevicius et al. 2018, "mixed precision").
    return jnp.promote_types(dtype, jnp.float32)


def masked_softmax(logits: Array, mask: Array | None = None, axis: int = -1) -> Array:
    """Numerically stable softmax over ``axis`` that drops masked entries.

    Args:
      logits: scores of any shape, e.g. ``[..., H, T, S]``. Entries equal to ``-inf`` count as
        masked, so an additive ``-inf`` bias works too.
      mask: optional boolean array broadcastable to ``logits``; True keeps an entry.
      axis: the axis to normalise over (the key axis).

    Returns:
      Weights of the shape of ``logits``, in at least float32. Rows with at least one kept
      entry sum to 1; rows where every entry is masked are all zeros (not NaN, not uniform),
      and their gradient is zero and finite. No step computes an inf for finite logits, so
      it runs under ``jax.debug_infs(True)``.
    """
    logits = logits.astype(_softmax_dtype(logits.dtype))
    # False on -inf (and NaN) entries: an additive -inf bias masks. No inf constant is formed.
    keep = logits >= jnp.finfo(logits.dtype).min
    if mask is not None:
        keep = jnp.logical_and(keep, _with_rank(mask, logits.ndim))
    return _softmax_kept(axis, logits, keep)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _softmax_kept(axis, logits, keep):
    # No inf is ever formed (jax.debug_infs), nor inf - inf: masked entries enter the max as
    # the lowest finite float, a finite stand-in for -inf that leaves the max of the kept
    # entries exact (a fully masked row's max is that float, and all its terms are dropped);
    # exp() sees min(logit - max, 0), which is the exact shift for every kept entry and keeps
    # a masked logit far above the kept ones from overflowing before the where drops it.
    row_max = jnp.max(jnp.where(keep, logits, jnp.finfo(logits.dtype).min), axis, keepdims=True)
    unnormalised = jnp.where(keep, jnp.exp(jnp.minimum(logits - row_max, 0.0)), 0.0)
    denominator = jnp.sum(unnormalised, axis=axis, keepdims=True)
    return unnormalised / jnp.where(denominator > 0, denominator, 1.0)


@_softmax_kept.defjvp
def _softmax_kept_jvp(axis, primals, tangents):
    # d softmax = w * (dx - <w, dx>), as jax.nn.softmax: one fused pass instead of
    # differentiating through the wheres; masked entries and empty rows have w = 0.
    logits, keep = primals
    logits_dot, _ = tangents
    weights = _softmax_kept(axis, logits, keep)
    logits_dot = jnp.where(keep, logits_dot, 0.0)  # a masked -inf logit's tangent is ignored
    weights_dot = weights * (logits_dot - jnp.sum(weights * logits_dot, axis, keepdims=True))
    return weights, weights_dot


def _check_float(name: str, x) -> None:
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"dot_product_attention: `{name}` must be a floating-point array, got dtype {dtype}"
        )


def _check_broadcast(name: str, x, target: tuple[int, ...]) -> None:
    shape = np.shape(x)
    ok = len(shape) <= len(target) and all(
        a == 1 or a == b for a, b in zip(shape[::-1], target[::-1], strict=False)
    )
    if not ok:
        raise ValueError(
            f"dot_product_attention: `{name}` must broadcast to [..., H, T, S] = "
            f"{list(target)}, got shape {list(shape)}"
        )


def _validate(query, key, value, bias, mask, scale, dropout_rate, dropout_rng, implementation):
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_float(name, x)
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(
            "dot_product_attention: `query`, `key` and `value` must share one dtype, got "
            f"query {query.dtype}, key {key.dtype}, value {value.dtype} "
            "(cast them explicitly, e.g. all to float32)"
        )
    if query.ndim < 3:
        raise ValueError(
            "dot_product_attention: `query` must have shape [..., T, H, D] (rank >= 3), "
            f"got shape {_shape_str(query)}"
        )
    for name, x in (("key", key), ("value", value)):
        if x.ndim != query.ndim:
            raise ValueError(
                f"dot_product_attention: `{name}` must have the rank of `query` "
                f"({query.ndim}: [..., S, Hk, D]), got shape {_shape_str(x)} "
                f"with query shape {_shape_str(query)}"
            )
    *batch, t, h, d = query.shape
    *kbatch, s, hk, dk = key.shape
    *vbatch, sv, hv, _ = value.shape
    if tuple(kbatch) != tuple(batch) or tuple(vbatch) != tuple(batch):
        raise ValueError(
            "dot_product_attention: batch dims of `query`, `key`, `value` must match, got "
            f"query {_shape_str(query)}, key {_shape_str(key)}, value {_shape_str(value)}"
        )
    if dk != d:
        raise ValueError(
            f"dot_product_attention: `key` head dim must equal `query` head dim D={d} "
            f"(expected [..., S, Hk, {d}]), got key shape {_shape_str(key)}"
        )
    if sv != s or hv != hk:
        raise ValueError(
            f"dot_product_attention: `value` must have shape [..., S={s}, Hk={hk}, Dv] like "
            f"`key` {_shape_str(key)}, got value shape {_shape_str(value)}"
        )
    if t == 0 or s == 0 or d == 0:
        raise ValueError(
            "dot_product_attention: empty sequence or head dim: T, S and D must be > 0, got "
            f"query {_shape_str(query)}, key {_shape_str(key)}"
        )
    if h % hk != 0:
        raise ValueError(
            f"dot_product_attention: key/value heads Hk={hk} must divide query heads H={h} "
            f"(grouped-query attention), got query {_shape_str(query)}, key {_shape_str(key)}"
        )
    target = (*batch, h, t, s)
    if mask is not None:
        if getattr(mask, "dtype", None) != jnp.bool_:
            raise TypeError(
                "dot_product_attention: `mask` must be a boolean array (True = keep), got dtype "
                f"{getattr(mask, 'dtype', type(mask).__name__)}; pass an additive float "
                "mask as `bias` instead"
            )
        _check_broadcast("mask", mask, target)
    if bias is not None:
        if not jnp.issubdtype(getattr(bias, "dtype", jnp.int32), jnp.floating):
            raise TypeError(
                f"dot_product_attention: `bias` must be a floating-point array, got dtype "
                f"{getattr(bias, 'dtype', type(bias).__name__)}"
            )
        _check_broadcast("bias", bias, target)
    if scale is not None and np.ndim(scale) != 0:
        raise ValueError(
            f"dot_product_attention: `scale` must be a scalar, got shape {_shape_str(scale)}"
        )
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(
            f"dot_product_attention: `dropout_rate` must be in [0, 1), got {dropout_rate}"
        )
    if dropout_rate > 0.0 and dropout_rng is None:
        raise ValueError(
            "dot_product_attention: `dropout_rng` (a jax.random key) is required when "
            f"dropout_rate={dropout_rate} > 0"
        )
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"dot_product_attention: `implementation` must be None or one of {IMPLEMENTATIONS}, "
            f"got {implementation!r}"
        )
    if implementation in ("chunked", "flash", "cudnn") and dropout_rate > 0.0:
        raise ValueError(
            f"dot_product_attention: implementation={implementation!r} has no attention "
            f"dropout, got dropout_rate={dropout_rate}; use implementation='xla' or None"
        )


def choose_implementation(
    t: int,
    s: int,
    *,
    dropout_rate: float = 0.0,
    return_weights: bool = False,
    backend: str | None = None,
) -> str:
    """The implementation ``implementation=None`` runs for ``T`` queries and ``S`` keys.

    ``"xla"`` whenever the weights are wanted or dropout is on (both need the ``[T, S]``
    matrix), and on GPU/TPU, where XLA fuses attention itself (the Pallas ``"flash"`` kernel is
    opt-in: it has not been measured on a GPU in this project yet). On the CPU, ``"chunked"``
    once a head's score matrix reaches 512 x 512 entries: from there it is faster than the
    materialised scores and needs O(T + S) memory (``python -m experiments.scaling``).
    """
    if return_weights or dropout_rate > 0.0:
        return "xla"
    backend = jax.default_backend() if backend is None else backend
    if backend == "cpu" and t * s >= _CHUNKED_FROM_SCORES:
        return "chunked"
    return "xla"


def dot_product_attention_weights(
    query: Array,
    key: Array,
    *,
    bias: Array | None = None,
    mask: Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Array:
    """Attention weights ``softmax(q k^T * scale + bias)`` with masking.

    Args:
      query: ``[..., T, H, D]``.
      key: ``[..., S, Hk, D]`` with Hk dividing H.
      bias: optional float array broadcastable to ``[..., H, T, S]``, added to the logits.
      mask: optional bool array broadcastable to ``[..., H, T, S]``; True = attend.
      is_causal: also apply ``causal_mask(T, S)`` (top-left aligned).
      scale: logit scale; default ``1 / sqrt(D)``.

    Returns:
      ``[..., H, T, S]`` weights in at least float32; fully masked rows are zero.
    """
    value = key  # only shapes matter for the checks
    _validate(query, key, value, bias, mask, scale, 0.0, None, None)
    return _weights(query, key, bias, mask, is_causal, scale)


def _weights(query, key, bias, mask, is_causal, scale, structure=None, residual=False):
    *batch, t, h, d = query.shape
    s, hk = key.shape[-3], key.shape[-2]
    groups = h // hk
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    compute_dtype = _softmax_dtype(query.dtype)
    # No copy of the K heads (grouped-query attention), and the query is the left operand,
    # so the [T, S] result needs no transpose (XLA:CPU then fuses the matmul, the scale and
    # the softmax into one kernel, as for jax.nn).
    n = len(batch)
    lead = tuple(range(n + 1))
    grouped = jnp.moveaxis(query.reshape(*batch, t, hk, groups, d), n, n + 2)
    logits = lax.dot_general(  # [..., Hk, G, T, D] x [..., Hk, S, D] -> [..., Hk, G, T, S]
        grouped,
        jnp.moveaxis(key, n, n + 1),
        (((n + 3,), (n + 2,)), (lead, lead)),
        preferred_element_type=compute_dtype,
    )
    logits = logits.reshape(*batch, h, t, s) * jnp.asarray(scale, compute_dtype)
    rank = logits.ndim  # masks and biases are broadcast by explicit reshapes to this rank
    if bias is not None:
        logits = logits + _with_rank(bias.astype(compute_dtype), rank)
    if structure is not None or residual:
        return _structured_weights(logits, mask, is_causal, structure, residual)
    if bias is None and mask is None:
        # No row can be empty (causal row i always sees key 0): the plain softmax, which
        # XLA:CPU fuses with the matmul that produced the logits; the causal mask enters as
        # an additive constant, because selects would split that fusion (1.5-2x slower). The
        # constant is jax.nn's finite -0.7 * max, not -inf (jax.debug_infs): exp() of it
        # minus the row max is exactly 0 all the same.
        if is_causal:
            causal = np.where(np.tril(np.ones((t, s), bool)), 0.0, large_negative(compute_dtype))
            logits = logits + _with_rank(causal.astype(compute_dtype), rank)
        return jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        mask = _with_rank(mask, rank)
    if is_causal:
        causal = _with_rank(causal_mask(t, s), rank)
        mask = causal if mask is None else jnp.logical_and(mask, causal)
    return masked_softmax(logits, mask)


def _structured_weights(logits, mask, is_causal, st: Structure | None, residual: bool):
    """The dense reference of a ``Structure``: ``score_fn`` and the elementwise rule
    evaluated on the whole ``[..., H, T, S]`` (O(T S): the ``"xla"`` path). Returns the
    weights, and with ``residual`` also the row log-sum-exp ``[..., H, T]``."""
    *batch, h, t, s = logits.shape
    nb = int(np.prod(batch, dtype=np.int64))
    flat = logits.reshape(nb, h, t, s)
    if mask is not None:
        mask = jnp.broadcast_to(_with_rank(mask, logits.ndim), logits.shape).reshape(nb, h, t, s)
    if is_causal:
        st = (st or Structure()).replace(causal=0) if st is None or st.causal is None else st
    if st is not None:
        b_, h_, q_, k_, q_seg, kv_seg = structure_lib.dense(st, nb, h, t, s)
        if st.score_fn is not None:
            flat = st.score_fn(flat, b_, h_, q_, k_).astype(flat.dtype)
        keep = structure_lib.keep(st, b_, h_, q_, k_, q_seg, kv_seg)
        if keep is not None:
            mask = keep if mask is None else jnp.logical_and(mask, keep)
    weights = masked_softmax(flat, mask).reshape(logits.shape)
    if not residual:
        return weights
    kept = flat >= jnp.finfo(flat.dtype).min
    if mask is not None:
        kept = jnp.logical_and(kept, jnp.broadcast_to(mask, flat.shape))
    neg = large_negative(flat.dtype)
    row_max = jnp.max(jnp.where(kept, flat, neg), axis=-1, keepdims=True)
    total = jnp.sum(jnp.where(kept, jnp.exp(jnp.minimum(flat - row_max, 0.0)), 0.0), axis=-1)
    seen = total > 0
    lse = jnp.where(seen, row_max[..., 0] + jnp.log(jnp.where(seen, total, 1.0)), neg)
    return weights, lax.stop_gradient(lse.reshape(*batch, h, t))


def _cudnn(query, key, value, *, bias, mask, is_causal, scale, return_residual,
           query_seq_lengths, key_value_seq_lengths, local_window_size):
    """``implementation="cudnn"``: passes through to ``jax.nn.dot_product_attention``."""
    if jax.default_backend() != "gpu":
        raise ValueError(
            "dot_product_attention: implementation='cudnn' needs an NVIDIA GPU (it calls "
            f"jax.nn.dot_product_attention(implementation='cudnn')); this backend is "
            f"{jax.default_backend()!r}: use implementation=None, 'xla' or 'chunked'")
    if is_causal not in (True, False):
        raise ValueError("dot_product_attention: implementation='cudnn' takes is_causal as a "
                         f"bool (top-left), got {is_causal!r}")
    return jax.nn.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, is_causal=bool(is_causal),
        query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
        local_window_size=local_window_size, implementation="cudnn",
        return_residual=return_residual)


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    bias: Array | None = None,
    mask: Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    implementation: str | None = None,
    return_weights: bool = False,
    query_seq_lengths: Array | None = None,
    key_value_seq_lengths: Array | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    query_segment_ids: Array | None = None,
    key_value_segment_ids: Array | None = None,
    prefix_lengths: Array | None = None,
    mask_fn=None,
    score_fn=None,
    return_residual: bool = False,
) -> Array | tuple[Array, Array]:
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1).

    Args:
      query: ``[..., T, H, D]`` queries.
      key: ``[..., S, Hk, D]`` keys; Hk divides H (grouped-/multi-query attention).
      value: ``[..., S, Hk, Dv]`` values.
      bias: optional float array broadcastable to ``[..., H, T, S]`` added to the logits
        (relative positions, ALiBi, an additive mask; ``-inf`` entries count as masked).
      mask: optional bool array broadcastable to ``[..., H, T, S]``; True = attend.
      is_causal: forbid query ``i`` from seeing keys ``j > i`` (``True`` or ``"top_left"``:
        top-left aligned, as jax.nn), or ``j > i + S - T`` (``"bottom_right"``: the T queries
        are the last T of the S positions, as with a KV cache).
      scale: logit scale; default ``1 / sqrt(D)``.
      dropout_rate: probability of dropping an attention weight (inverted dropout).
      dropout_rng: ``jax.random`` key, required when ``dropout_rate > 0``.
      implementation: ``"xla"`` (materialise the ``[T, S]`` weights; the reference),
        ``"chunked"`` (``ops.chunked_attention``: blocked, online softmax, O(T + S) memory,
        recomputing backward), ``"flash"`` (``ops.flash_attention``: the same algorithm as a
        Pallas kernel; interpreted off GPU, slow, for tests) or ``None``: the best for the
        backend and shape (``choose_implementation``). ``"chunked"`` and ``"flash"`` have no
        dropout and do not return weights.
      return_weights: also return the attention weights (before dropout); with
        ``implementation=None`` this selects ``"xla"``.
      query_seq_lengths, key_value_seq_lengths: ``[...]`` int; as jax.nn: query ``i`` of
        example ``b`` exists iff ``i < query_seq_lengths[b]`` (the others output zeros), key
        ``j`` iff ``j < key_value_seq_lengths[b]``.
      local_window_size: as jax.nn: ``(left, right)`` (or one int for both): query ``i``
        sees keys ``i - left <= j <= i + right``. With ``is_causal`` and ``(w, 0)`` this is
        sliding-window attention; ``"chunked"`` skips the key blocks outside the band.
      query_segment_ids, key_value_segment_ids: ``[..., T]`` / ``[..., S]`` int (document
        packing): query ``i`` sees key ``j`` only if their ids are equal. The second
        defaults to the first when ``T == S``.
      prefix_lengths: ``[...]`` int, with ``is_causal``: keys ``j < prefix_lengths[b]``
        are visible to every query (prefix LM).
      mask_fn: ``mask_fn(batch, head, q_index, kv_index) -> bool``, True = attend; and
      score_fn: ``score_fn(score, batch, head, q_index, kv_index) -> score``, applied to
        the scaled scores after ``bias``: both elementwise in jnp on broadcastable int32
        index arrays (``ops.structure``). Arrays ``score_fn`` closes over get gradients.
      return_residual: also return the row log-sum-exp of the kept scaled scores,
        ``[..., T, H]``, as jax.nn (no gradient through it). Rows that see no key hold
        ``large_negative`` (jax.nn: the log-sum-exp of its masked placeholders).

    Everything structured is combined by AND (``prefix_lengths`` widens the causal mask)
    and never materialised by ``"chunked"`` or ``"flash"``: they decide per (query block,
    key block) whether the block is empty (skipped), full (not masked) or partial
    (``"flash"`` per example, inside its Pallas kernels). ``"xla"`` evaluates the same rule
    densely (the reference). ``implementation="cudnn"`` passes everything jax.nn knows
    through to ``jax.nn.dot_product_attention(implementation="cudnn")`` on an NVIDIA GPU and
    raises elsewhere. Unlike jax.nn's ``"xla"``, a query row that sees no key outputs zeros
    (jax.nn averages the values there).

    Returns:
      ``out [..., T, H, Dv]`` in the dtype of ``query``, or ``(out, weights)`` with
      ``weights [..., H, T, S]`` (float32 or wider) when ``return_weights``, then
      ``lse [..., T, H]`` when ``return_residual``. Query rows that can see no key give a
      zero output and zero (finite) gradients.
    """
    _validate(query, key, value, bias, mask, scale, dropout_rate, dropout_rng, implementation)
    *batch, t, _, _ = query.shape
    s = key.shape[-3]
    if implementation == "cudnn":
        for name, x in (("query_segment_ids", query_segment_ids),
                        ("prefix_lengths", prefix_lengths), ("mask_fn", mask_fn),
                        ("score_fn", score_fn)):
            if x is not None:
                raise ValueError(f"dot_product_attention: implementation='cudnn' (jax.nn) "
                                 f"has no `{name}`; use 'chunked' or 'xla'")
        if return_weights:
            raise ValueError("dot_product_attention: implementation='cudnn' does not return "
                             "weights")
        return _cudnn(query, key, value, bias=bias, mask=mask, is_causal=is_causal,
                      scale=scale, return_residual=return_residual,
                      query_seq_lengths=query_seq_lengths,
                      key_value_seq_lengths=key_value_seq_lengths,
                      local_window_size=local_window_size)
    structure = structure_lib.make_structure(
        tuple(batch), t, s, is_causal=is_causal, local_window_size=local_window_size,
        query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
        query_segment_ids=query_segment_ids, key_value_segment_ids=key_value_segment_ids,
        prefix_lengths=prefix_lengths, mask_fn=mask_fn, score_fn=score_fn)
    simple_causal = structure is not None and structure.causal == 0 and all(
        getattr(structure, f) is None for f in ("window", "mask_fn", "score_fn")) and all(
        x is None for x in structure.arrays.values())
    if implementation is None:
        implementation = choose_implementation(t, s, dropout_rate=dropout_rate,
                                               return_weights=return_weights)
    if implementation != "xla":
        if return_weights:
            raise ValueError(
                f"dot_product_attention: implementation={implementation!r} never forms the "
                "[T, S] weights, so return_weights=True needs implementation='xla' or None"
            )
        if implementation == "chunked":
            return chunked_attention(query, key, value, bias=bias, mask=mask, scale=scale,
                                     structure=structure, return_residual=return_residual)
        # Pallas is imported only when asked for
        from attnjax.ops.flash import flash_attention
        return flash_attention(query, key, value, bias=bias, mask=mask, scale=scale,
                               structure=structure, return_residual=return_residual)
    if simple_causal and not return_residual:
        weights = _weights(query, key, bias, mask, True, scale)
        lse = None
    else:
        weights = _weights(query, key, bias, mask, False, scale, structure, return_residual)
        weights, lse = weights if return_residual else (weights, None)
    *batch, t, h, _ = query.shape
    s, hk, dv = value.shape[-3:]
    groups = h // hk
    applied = weights
    if dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        applied = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    n = len(batch)
    lead = tuple(range(n + 1))
    out = lax.dot_general(  # [..., Hk, G, T, S] x [..., Hk, S, Dv] -> [..., Hk, G, T, Dv]
        applied.reshape(*batch, hk, groups, t, s).astype(value.dtype),
        jnp.moveaxis(value, n, n + 1),
        (((n + 3,), (n + 1,)), (lead, lead)),
        preferred_element_type=_softmax_dtype(value.dtype),
    )
    out = jnp.moveaxis(out, n + 2, n)
    out = out.reshape(*batch, t, h, dv).astype(query.dtype)
    extra = ((weights,) if return_weights else ()) + \
        ((jnp.swapaxes(lse, -1, -2),) if return_residual else ())
    return (out, *extra) if extra else out
