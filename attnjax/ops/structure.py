"""Structured attention: masks and score functions described, never materialised as ``[T, S]``.

A ``Structure`` holds what ``dot_product_attention`` takes besides dense ``mask``/``bias``
arrays: causal masking (top-left as ``jax.nn``, or bottom-right), a local window
(``jax.nn``'s ``local_window_size``), padding lengths (``query_seq_lengths``,
``key_value_seq_lengths``), document packing (``query_segment_ids``,
``key_value_segment_ids``), a bidirectional prefix (prefix-LM, ``prefix_lengths``), and two
user functions in the style of PyTorch's FlexAttention:

* ``mask_fn(batch, head, q_index, kv_index) -> bool``: True = attend;
* ``score_fn(score, batch, head, q_index, kv_index) -> score``: rewrites each scaled score
  (after ``bias`` is added, before masking): ALiBi, soft-capping, relative-position buckets,
  a learned bias table it closes over (which then gets its gradient).

Both receive integer index arrays that broadcast against each other and against ``score``
(``batch`` indexes the flattened batch dims, ``head`` the query head, ``q_index`` and
``kv_index`` absolute positions): write them elementwise in ``jnp`` (``q_index >= kv_index``,
``slopes[head] * (kv_index - q_index)``, ``table[jnp.clip(q_index - kv_index, 0, 127)]``),
never depending on the arrays' shapes, which differ between implementations.

The parts combine by logical AND, except ``prefix_lengths``, which widens the causal mask:
key ``j < prefix_lengths[b]`` is visible to every query of example ``b`` (Raffel et al.
2020's prefix LM). The blocked implementations (``ops.chunked``; ``ops.ring`` through it)
classify each ``(query block, key block)`` as empty, full or partial from this description
(``block_schedule``: O(number of blocks) work, except ``mask_fn``, which is evaluated once
per block on broadcast index arrays), skip the empty ones and mask only the partial ones;
``ops.attention``'s ``"xla"`` reference evaluates the same elementwise rule densely
(``keep``), so both read one definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Structure:
    """The structured part of one attention call (see the module docstring).

    Static: ``causal`` (``None``: no causal mask, else the diagonal offset: query ``i`` sees
    keys ``j <= i + causal``; 0 is top-left, ``S - T`` bottom-right), ``window`` (``None`` or
    ``(left, right)``: query ``i`` sees ``i - left <= j <= i + right``), ``mask_fn``,
    ``score_fn``. Arrays (flattened batch ``B``): ``q_lengths [B]``, ``kv_lengths [B]``,
    ``q_segments [B, T]``, ``kv_segments [B, S]``, ``prefix [B]``; any may be ``None``.
    """

    causal: int | None = None
    window: tuple[int, int] | None = None
    mask_fn: Callable | None = None
    score_fn: Callable | None = None
    q_lengths: Array | None = None
    kv_lengths: Array | None = None
    q_segments: Array | None = None
    kv_segments: Array | None = None
    prefix: Array | None = None

    @property
    def masks(self) -> bool:
        """Whether any part removes scores (everything but ``score_fn``)."""
        return (self.causal is not None or self.window is not None or self.mask_fn is not None
                or any(x is not None for x in (self.q_lengths, self.kv_lengths,
                                               self.q_segments)))

    @property
    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in ARRAY_FIELDS}

    def replace(self, **changes) -> Structure:
        return dataclasses.replace(self, **changes)


ARRAY_FIELDS = ("q_lengths", "kv_lengths", "q_segments", "kv_segments", "prefix")

jax.tree_util.register_dataclass(
    Structure, data_fields=list(ARRAY_FIELDS),
    meta_fields=["causal", "window", "mask_fn", "score_fn"])


def _shape(x) -> list[int]:
    return list(np.shape(x))


def _int_array(name: str, x, shape: tuple[int, ...]) -> Array:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = jnp.asarray(x)
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"dot_product_attention: `{name}` must be an integer array of shape "
                        f"{list(shape)}, got dtype {dtype}")
    if tuple(np.shape(x)) != tuple(shape):
        raise ValueError(f"dot_product_attention: `{name}` must have shape {list(shape)}, "
                         f"got shape {_shape(x)}")
    return jnp.asarray(x).astype(jnp.int32)


def make_structure(
    batch: tuple[int, ...],
    t: int,
    s: int,
    *,
    is_causal: bool | str = False,
    local_window_size: int | tuple[int, int] | None = None,
    query_seq_lengths: Array | None = None,
    key_value_seq_lengths: Array | None = None,
    query_segment_ids: Array | None = None,
    key_value_segment_ids: Array | None = None,
    prefix_lengths: Array | None = None,
    mask_fn: Callable | None = None,
    score_fn: Callable | None = None,
) -> Structure | None:
    """Validates ``dot_product_attention``'s structured arguments (at trace time, naming the
    argument and the expected shape) and returns their ``Structure`` with arrays flattened
    to one batch dim, or ``None`` when there is none."""
    if is_causal is True or is_causal == "top_left":
        causal = 0
    elif is_causal == "bottom_right":
        causal = s - t
    elif is_causal is False or is_causal is None:
        causal = None
    else:
        raise ValueError("dot_product_attention: `is_causal` must be a bool, 'top_left' "
                         f"(= True, as jax.nn) or 'bottom_right', got {is_causal!r}")
    window = None
    if local_window_size is not None:
        w = local_window_size
        window = (w, w) if isinstance(w, int | np.integer) else tuple(w)
        if len(window) != 2 or not all(isinstance(x, int | np.integer) and x >= 0
                                       for x in window):
            raise ValueError("dot_product_attention: `local_window_size` must be an int >= 0 "
                             f"or a pair (left, right) of them, got {local_window_size!r}")
        window = (int(window[0]), int(window[1]))
    for name, fn in (("mask_fn", mask_fn), ("score_fn", score_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"dot_product_attention: `{name}` must be callable, got "
                            f"{type(fn).__name__}")
    if prefix_lengths is not None and causal is None:
        raise ValueError("dot_product_attention: `prefix_lengths` widens the causal mask "
                         "(a prefix LM) and needs is_causal")
    if key_value_segment_ids is not None and query_segment_ids is None:
        raise ValueError("dot_product_attention: `key_value_segment_ids` needs "
                         "`query_segment_ids` too")
    if query_segment_ids is not None and key_value_segment_ids is None:
        if s != t:
            raise ValueError("dot_product_attention: `key_value_segment_ids` [..., S] is "
                             f"required when T={t} != S={s}")
        key_value_segment_ids = query_segment_ids
    batch = tuple(batch)
    nb = int(np.prod(batch, dtype=np.int64))
    flat = {}
    for name, x, shape in (("query_seq_lengths", query_seq_lengths, batch),
                           ("key_value_seq_lengths", key_value_seq_lengths, batch),
                           ("prefix_lengths", prefix_lengths, batch),
                           ("query_segment_ids", query_segment_ids, (*batch, t)),
                           ("key_value_segment_ids", key_value_segment_ids, (*batch, s))):
        if x is not None:
            x = _int_array(name, x, shape)
            flat[name] = x.reshape(nb, *shape[len(batch):])
    st = Structure(causal=causal, window=window, mask_fn=mask_fn, score_fn=score_fn,
                   q_lengths=flat.get("query_seq_lengths"),
                   kv_lengths=flat.get("key_value_seq_lengths"),
                   q_segments=flat.get("query_segment_ids"),
                   kv_segments=flat.get("key_value_segment_ids"),
                   prefix=flat.get("prefix_lengths"))
    if not st.masks and score_fn is None:
        return None
    return st


def _per_batch(x, rank: int):
    """``[B]`` -> ``[B, 1, ..., 1]`` of ``rank``."""
    return x.reshape(x.shape[0], *(1,) * (rank - 1))


def keep(st: Structure, b, h, q, k, q_seg=None, kv_seg=None) -> Array | None:
    """The elementwise rule: bool, broadcast of the index arrays ``b, h, q, k`` (all of one
    rank; ``q``, ``k`` absolute positions), or ``None`` when nothing is masked.

    ``q_seg``, ``kv_seg``: the segment ids at ``q`` and ``k`` laid out like them (the
    caller slices them: densely or per block)."""
    rank = np.ndim(q)
    out = None

    def both(m):
        nonlocal out
        out = m if out is None else jnp.logical_and(out, m)

    if st.causal is not None:
        c = k <= q + st.causal
        if st.prefix is not None:
            c = jnp.logical_or(c, k < _per_batch(st.prefix, rank))
        both(c)
    if st.window is not None:
        left, right = st.window
        both(jnp.logical_and(k >= q - left, k <= q + right))
    if st.kv_lengths is not None:
        both(k < _per_batch(st.kv_lengths, rank))
    if st.q_lengths is not None:
        both(q < _per_batch(st.q_lengths, rank))
    if st.q_segments is not None:
        both(q_seg == kv_seg)
    if st.mask_fn is not None:
        m = st.mask_fn(b, h, q, k)
        if getattr(m, "dtype", None) != jnp.bool_:
            raise TypeError(f"mask_fn must return booleans, got {getattr(m, 'dtype', m)}")
        both(m)
    return out


def dense(st: Structure, nb: int, h: int, t: int, s: int):
    """Index arrays and segment values for the dense ``[B, H, T, S]`` evaluation (the
    ``"xla"`` reference): ``(b, h, q, k, q_seg, kv_seg)``."""
    b_ = jnp.arange(nb, dtype=jnp.int32).reshape(nb, 1, 1, 1)
    h_ = jnp.arange(h, dtype=jnp.int32).reshape(1, h, 1, 1)
    q_ = jnp.arange(t, dtype=jnp.int32).reshape(1, 1, t, 1)
    k_ = jnp.arange(s, dtype=jnp.int32).reshape(1, 1, 1, s)
    q_seg = kv_seg = None
    if st.q_segments is not None:
        q_seg = st.q_segments.reshape(nb, 1, t, 1)
        kv_seg = st.kv_segments.reshape(nb, 1, 1, s)
    return b_, h_, q_, k_, q_seg, kv_seg


def block_schedule(st: Structure | None, *, t: int, s: int, block_q: int, block_k: int,
                   n_q: int, n_k: int, has_dense_mask: bool, q_offset=0, k_offset=0,
                   nb: int = 1, h: int = 1, hk: int = 1):
    """Which key blocks each query block visits, and which of them need no mask.

    Returns ``visit [n_q, n_k]`` int32 (per query block, the key blocks that are not empty,
    in increasing order, then the empty ones), ``count [n_q]`` (how many to visit) and
    ``full [n_q, n_k]`` (in ``visit``'s order: every score of the block is kept, so no mask
    is computed). A block is empty when no score in it is kept for any batch element or
    head (so one schedule serves the whole batch). ``q_offset``/``k_offset``: the absolute
    position of the first query/key (``ops.ring``'s shards); may be traced.
    """
    i = np.arange(n_q)[:, None]
    j = np.arange(n_k)[None, :]
    r0 = q_offset + i * block_q
    r1 = q_offset + np.minimum((i + 1) * block_q, t) - 1
    c0 = k_offset + j * block_k
    c1 = k_offset + np.minimum((j + 1) * block_k, s) - 1
    empty = jnp.zeros((n_q, n_k), bool)
    # The tail key block holds padding columns (masked), and a dense mask is unknown here.
    full = jnp.broadcast_to(jnp.asarray((j + 1) * block_k <= s), (n_q, n_k))
    if has_dense_mask:
        full = jnp.zeros((n_q, n_k), bool)
    if st is not None:
        if st.causal is not None:
            c_empty = c0 > r1 + st.causal
            c_full = c1 <= r0 + st.causal
            if st.prefix is not None:
                c_empty = jnp.logical_and(c_empty, c0 >= jnp.max(st.prefix))
                c_full = jnp.logical_or(c_full, c1 < jnp.min(st.prefix))
            empty, full = empty | c_empty, full & c_full
        if st.window is not None:
            left, right = st.window
            empty = empty | (c1 < r0 - left) | (c0 > r1 + right)
            full = full & (c0 >= r1 - left) & (c1 <= r0 + right)
        if st.kv_lengths is not None:
            empty = empty | (c0 >= jnp.max(st.kv_lengths))
            full = full & (c1 < jnp.min(st.kv_lengths))
        if st.q_lengths is not None:
            empty = empty | (r0 >= jnp.max(st.q_lengths))
            full = full & (r1 < jnp.min(st.q_lengths))
        if st.q_segments is not None:
            qmin, qmax = _block_range(st.q_segments, block_q, n_q)
            kmin, kmax = _block_range(st.kv_segments, block_k, n_k)
            disjoint = (qmax[:, :, None] < kmin[:, None, :]) | (kmax[:, None, :] < qmin[:, :, None])
            one = (qmin == qmax)[:, :, None] & (kmin == kmax)[:, None, :] \
                & (qmin[:, :, None] == kmin[:, None, :])
            empty = empty | jnp.all(disjoint, axis=0)
            full = full & jnp.all(one, axis=0)
        if st.mask_fn is not None:
            fn_any, fn_all = _evaluate_blocks(st.mask_fn, nb=nb, h=h, block_q=block_q,
                                              block_k=block_k, n_q=n_q, n_k=n_k, t=t, s=s,
                                              q_offset=q_offset, k_offset=k_offset)
            empty, full = empty | ~fn_any, full & fn_all
    full = full & ~empty
    visit = jnp.argsort(empty.astype(jnp.int8), axis=1, stable=True).astype(jnp.int32)
    count = jnp.sum(~empty, axis=1).astype(jnp.int32)
    return visit, count, jnp.take_along_axis(full, visit, axis=1)


def _block_range(segments, block: int, n: int):
    """Per batch element and block, min and max segment id over the block's real positions
    (the padding repeats the last id, so it changes neither): ``[B, n]`` each."""
    length = segments.shape[1]
    padded = jnp.pad(segments, ((0, 0), (0, n * block - length)), mode="edge")
    blocks = padded.reshape(segments.shape[0], n, block)
    return blocks.min(-1), blocks.max(-1)


def _evaluate_blocks(mask_fn, *, nb, h, block_q, block_k, n_q, n_k, t, s, q_offset,
                     k_offset):
    """``mask_fn`` on every block (``lax.map``, one block at a time): whether any / every
    real score of the block is kept, ``[n_q, n_k]`` each."""
    b = jnp.arange(nb, dtype=jnp.int32).reshape(nb, 1, 1, 1)
    hh = jnp.arange(h, dtype=jnp.int32).reshape(1, h, 1, 1)
    rq = jnp.arange(block_q, dtype=jnp.int32).reshape(1, 1, block_q, 1)
    rk = jnp.arange(block_k, dtype=jnp.int32).reshape(1, 1, 1, block_k)

    def one(ij):
        i, j = ij // n_k, ij % n_k
        q = i * block_q + rq
        k = j * block_k + rk
        real = jnp.logical_and(q < t, k < s)
        m = mask_fn(b, hh, q + q_offset, k + k_offset)
        m = jnp.broadcast_to(m, jnp.broadcast_shapes(m.shape, real.shape))
        real = jnp.broadcast_to(real, m.shape)
        return jnp.any(m & real), jnp.all(m | ~real)

    fn_any, fn_all = jax.lax.map(one, jnp.arange(n_q * n_k, dtype=jnp.int32))
    return fn_any.reshape(n_q, n_k), fn_all.reshape(n_q, n_k)
