"""FlashAttention forward and backward as Pallas kernels (Dao et al. 2022; Dao 2023).

Same semantics as ``attnjax.ops.dot_product_attention`` (layout ``[..., T, H, D]``, bool
``mask`` with True = keep, additive ``bias`` where ``-inf`` counts as masked, top-left causal,
GQA/MQA, fully masked query rows give zeros), but the ``[H, T, S]`` attention matrix is never
stored: the forward pass streams key/value blocks through an online softmax and saves only
the output and the per-row logsumexp; the backward pass recomputes the probabilities block by
block.

The kernels are Triton-style ``pallas_call``s: a grid over ``(batch * heads, blocks)`` and a
``fori_loop`` over the other sequence axis, written to compile with Triton on NVIDIA GPUs
(the tests lower them for CUDA on any host; compiling and running them on a GPU is not tested
here). Everywhere else they run in Pallas interpret mode, which computes the same numbers but
slowly: it is there to test the kernels, not to be fast.

Internally every array is padded: T and S up to a multiple of the block sizes (padded keys
are masked, padded queries are sliced off) and the head dims D, Dv up to a power of two >= 16,
which Triton's ``tl.dot`` needs (zero columns change no logit).

Accumulation (logits, softmax statistics, output and gradient accumulators) is in
``promote_types(dtype, float32)``: float32 for float32/bf16/fp16 inputs, float64 for float64
ones, so float64 inputs get a float64-accurate result, as from the other implementations.
Masked logits take the finite ``ops.chunked.large_negative`` (jax.nn's ``-0.7 * max``)
instead of ``-inf``, so no kernel step forms an inf (``jax.debug_infs``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attnjax.ops.chunked import large_negative

Array = jax.Array

_DOT_QK = (((1,), (1,)), ((), ()))  # [bq, D] x [bk, D] -> [bq, bk]
_DOT_TN = (((0,), (0,)), ((), ()))  # [bq, bk]^T x [bq, D] -> [bk, D]
_DOT_NN = (((1,), (0,)), ((), ()))  # [bq, bk] x [bk, D] -> [bq, D]


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static (hashable) kernel parameters; block sizes are the clamped ones."""

    scale: float
    is_causal: bool
    block_q: int
    block_k: int
    kv_length: int  # S before padding: keys at or beyond it are padding
    kv_padded: bool
    interpret: bool
    accumulate: str = "float32"  # dtype name of logits/statistics: promote(dtype, float32)

    @property
    def acc(self):
        return jnp.dtype(self.accumulate)

    @property
    def neg(self):
        return large_negative(self.acc)


def flash_attention(
    query: Array,
    key: Array,
    value: Array,
    *,
    bias: Array | None = None,
    mask: Array | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    block_q: int = 128,
    block_k: int = 128,
    interpret: bool | None = None,
) -> Array:
    """Memory-efficient scaled dot-product attention as a Pallas kernel, with its own VJP.

    Shapes are not validated here: ``attnjax.ops.dot_product_attention`` does that before it
    dispatches. Call through it unless you know the inputs are well formed.

    Args:
      query: ``[..., T, H, D]`` queries.
      key: ``[..., S, Hk, D]`` keys; Hk divides H and query head ``h`` reads key/value head
        ``h // (H // Hk)`` (grouped-/multi-query attention). The K/V heads are never repeated.
      value: ``[..., S, Hk, Dv]`` values.
      bias: optional float array broadcastable to ``[..., H, T, S]``, added to the logits;
        ``-inf`` entries count as masked. It gets a gradient.
      mask: optional bool array broadcastable to ``[..., H, T, S]``; True = attend. No gradient.
      is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned, ``ops.causal_mask``).
        Key blocks entirely above the diagonal are skipped, not computed and masked.
      scale: Python float logit scale; default ``1 / sqrt(D)``.
      block_q: query rows per kernel program (Br in the FlashAttention papers). Clamped to
        the smallest power of two >= max(T, 16) for short inputs. On GPU it must be a power of
        two >= 16 (a Triton requirement); interpret mode takes any size.
      block_k: keys per inner-loop step (Bc); clamped and constrained like ``block_q``.
      interpret: run the kernels in Pallas interpret mode. ``None``: interpret unless
        ``jax.default_backend() == "gpu"``.

    Returns:
      ``out [..., T, H, Dv]`` in the dtype of ``query``. Logits, softmax statistics and
      accumulators are float32 for float32/bf16/fp16 inputs and float64 for float64 inputs
      (computed in float64: as accurate as ``implementation="xla"``; on a GPU that is
      Triton's float64 ``dot``, far slower than float32 and not tested on a GPU here). Query
      rows that see no key give zeros and zero gradients.
    """
    if block_q < 1 or block_k < 1:
        raise ValueError(
            f"flash_attention: `block_q` and `block_k` must be >= 1, got block_q={block_q}, "
            f"block_k={block_k}"
        )
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    *batch, t, h, d = query.shape
    s, hk, dv = value.shape[-3:]
    n = math.prod(batch)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    block_q = min(block_q, _short_block(t))
    block_k = min(block_k, _short_block(s))
    t_pad, s_pad = _round_up(t, block_q), _round_up(s, block_k)
    d_pad, dv_pad = _padded_head_dim(d), _padded_head_dim(dv)

    queries = _pad(query.reshape(n, t, h, d), {1: t_pad, 3: d_pad})
    keys = _pad(key.reshape(n, s, hk, d), {1: s_pad, 3: d_pad})
    values = _pad(value.reshape(n, s, hk, dv), {1: s_pad, 3: dv_pad})
    if bias is not None:
        bias = _pad(_pairwise_layout(bias, batch, h, t, s), {2: t_pad, 3: s_pad})
    if mask is not None:
        # int8: Triton loads bytes, not i1; padding is 0 = masked (and masked by index anyway).
        mask = _pad(_pairwise_layout(mask, batch, h, t, s).astype(jnp.int8), {2: t_pad, 3: s_pad})
    config = _Config(
        scale=scale,
        is_causal=bool(is_causal),
        block_q=block_q,
        block_k=block_k,
        kv_length=s,
        kv_padded=s_pad != s,
        interpret=bool(interpret),
        accumulate=jnp.dtype(jnp.promote_types(query.dtype, jnp.float32)).name,
    )
    out = _flash(config, queries, keys, values, bias, mask)
    return out[:, :t, :, :dv].reshape(*batch, t, h, dv)


# --------------------------------------------------------------------------- shapes


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _short_block(length: int) -> int:
    # A block never needs to be longer than the sequence; keep it a power of two >= 16 so a
    # clamped block is still a valid Triton tile.
    return max(16, pl.next_power_of_2(length))


def _padded_head_dim(dim: int) -> int:
    return max(16, pl.next_power_of_2(dim))


def _pad(x: Array, sizes: dict[int, int]) -> Array:
    widths = [(0, sizes.get(axis, size) - size) for axis, size in enumerate(x.shape)]
    if all(hi == 0 for _, hi in widths):
        return x
    return jnp.pad(x, widths)


def _pairwise_layout(x: Array, batch: list[int], h: int, t: int, s: int) -> Array:
    """Broadcastable ``[..., H, T, S]`` -> ``[Nb, Nh, T, S]``, Nb in {1, N}, Nh in {1, H}.

    A batch or head axis of size 1 stays 1 (the kernels read block 0 for every program), so a
    ``[T, S]`` bias is not copied per example or head; its gradient is summed back over them.
    """
    x = x.reshape((1,) * (len(batch) + 3 - x.ndim) + x.shape)
    broadcast_batch = all(size == 1 for size in x.shape[: len(batch)])
    batch_shape = tuple(1 for _ in batch) if broadcast_batch else tuple(batch)
    num_heads = 1 if x.shape[-3] == 1 else h
    x = jnp.broadcast_to(x, (*batch_shape, num_heads, t, s))
    return x.reshape(math.prod(batch_shape), num_heads, t, s)


def _compiler_params(head_dim: int) -> plgpu.CompilerParams:
    return plgpu.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=2)


# --------------------------------------------------------------------------- kernels


def _masked_logits(queries, keys, q_start, k_start, bias, mask, config: _Config):
    """``[bq, D] x [bk, D] -> [bq, bk]`` logits in ``config.acc``, ``config.neg`` (the finite
    stand-in for -inf) wherever not attended."""
    logits = lax.dot_general(queries, keys, _DOT_QK, preferred_element_type=config.acc)
    logits = logits * config.scale
    if bias is not None:
        logits = logits + bias.astype(config.acc)  # a -inf bias stays -inf: masked
    keep = None
    rows = q_start + jnp.arange(logits.shape[0])[:, None]
    cols = k_start + jnp.arange(logits.shape[1])[None, :]
    if config.kv_padded:
        keep = cols < config.kv_length
    if config.is_causal:
        keep = _and(keep, cols <= rows)
    if mask is not None:
        keep = _and(keep, mask != 0)
    return logits if keep is None else jnp.where(keep, logits, config.neg)


def _and(a, b):
    return b if a is None else jnp.logical_and(a, b)


def _split(refs, has_bias: bool, has_mask: bool, num_inputs: int):
    """Kernel refs ``(*inputs, [bias], [mask], *outputs)`` -> ``(inputs, bias, mask, outputs)``,
    with ``None`` for an absent bias or mask."""
    inputs, rest = refs[:num_inputs], list(refs[num_inputs:])
    bias = rest.pop(0) if has_bias else None
    mask = rest.pop(0) if has_mask else None
    return inputs, bias, mask, rest


def _tile(ref, *index):
    return None if ref is None else ref[index]


def _num_kv_blocks_for(q_start, num_kv_blocks: int, config: _Config):
    """How many key blocks query rows ``[q_start, q_start + block_q)`` can see."""
    if not config.is_causal:
        return num_kv_blocks
    # Causal: the last row sees keys <= q_start + block_q - 1; later blocks are all masked.
    # int32 constants: with x64 enabled a Python int would be int64 next to the int32 program
    # id, and lax.div/min take one dtype.
    last = lax.div(q_start + (config.block_q + config.block_k - 1), jnp.int32(config.block_k))
    return lax.min(last, jnp.int32(num_kv_blocks))


def _forward_kernel(*refs, config: _Config, has_bias: bool, has_mask: bool):
    (q_ref, k_ref, v_ref), bias_ref, mask_ref, (out_ref, lse_ref) = _split(
        refs, has_bias, has_mask, num_inputs=3
    )
    block_q, block_k = config.block_q, config.block_k
    q_start = pl.program_id(1) * block_q
    queries = q_ref[...]  # [bq, D]

    # Online softmax (Milakov & Gimelshein 2018; Dao 2023, alg. 1): a running row max, a
    # running row sum and an unnormalised accumulator, rescaled when the max grows.
    def body(j, carry):
        acc, row_max, row_sum = carry
        k_start = pl.multiple_of(j * block_k, block_k)
        span = pl.ds(k_start, block_k)
        logits = _masked_logits(
            queries,
            k_ref[span, :],
            q_start,
            k_start,
            _tile(bias_ref, slice(None), span),
            _tile(mask_ref, slice(None), span),
            config,
        )
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
        # Rows that have seen no key yet have max config.neg; shifting them by 0 makes their
        # exp(neg) terms exactly 0 (shifting by neg itself would make them exp(0) = 1).
        shift = jnp.where(new_max == config.neg, 0.0, new_max)
        correction = jnp.exp(row_max - shift)
        probs = jnp.exp(logits - shift[:, None])
        row_sum = correction * row_sum + jnp.sum(probs, axis=1)
        values = v_ref[span, :]
        acc = correction[:, None] * acc + lax.dot_general(
            probs.astype(values.dtype), values, _DOT_NN, preferred_element_type=config.acc
        )
        return acc, new_max, row_sum

    num_kv_blocks = _num_kv_blocks_for(q_start, k_ref.shape[0] // block_k, config)
    init = (
        jnp.zeros((block_q, out_ref.shape[-1]), config.acc),
        jnp.full((block_q,), config.neg, config.acc),
        jnp.zeros((block_q,), config.acc),
    )
    acc, row_max, row_sum = lax.fori_loop(0, num_kv_blocks, body, init)
    seen = row_sum > 0  # False only for rows where every key is masked
    safe_sum = jnp.where(seen, row_sum, 1.0)
    out_ref[...] = (acc / safe_sum[:, None]).astype(out_ref.dtype)
    # A fully masked row stores 0: the backward recomputes exp(neg - 0) = 0 for it.
    lse_ref[...] = jnp.where(seen, row_max + jnp.log(safe_sum), 0.0)


def _dkdv_kernel(*refs, config: _Config, has_bias: bool, has_mask: bool):
    """One key block of one K/V head; loops over the G query heads reading it, then queries."""
    inputs, bias_ref, mask_ref, outputs = _split(refs, has_bias, has_mask, num_inputs=6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = inputs
    dk_ref, dv_ref, *dbias_ref = outputs
    dbias_ref = dbias_ref[0] if dbias_ref else None  # only when there is a bias
    block_q, block_k = config.block_q, config.block_k
    k_start = pl.program_id(1) * block_k
    keys, values = k_ref[...], v_ref[...]  # [bk, D], [bk, Dv]
    num_groups = q_ref.shape[1]
    num_q_blocks = q_ref.shape[0] // block_q
    # Causal: query blocks that end before this key block starts see none of it.
    first_q_block = lax.div(k_start, jnp.int32(block_q)) if config.is_causal else 0

    def group(g, carry):
        bias_g = g if bias_ref is not None and bias_ref.shape[0] > 1 else 0
        mask_g = g if mask_ref is not None and mask_ref.shape[0] > 1 else 0

        def body(i, carry):
            dk, dv = carry
            q_start = pl.multiple_of(i * block_q, block_q)
            span = pl.ds(q_start, block_q)
            queries = q_ref[span, g, :]
            d_out = do_ref[span, g, :]
            logits = _masked_logits(
                queries,
                keys,
                q_start,
                k_start,
                _tile(bias_ref, bias_g, span, slice(None)),
                _tile(mask_ref, mask_g, span, slice(None)),
                config,
            )
            probs = jnp.exp(logits - lse_ref[g, span][:, None])
            dv = dv + lax.dot_general(
                probs.astype(d_out.dtype), d_out, _DOT_TN, preferred_element_type=config.acc
            )
            d_probs = lax.dot_general(d_out, values, _DOT_QK, preferred_element_type=config.acc)
            # Softmax backward through the saved statistics (Dao 2023, eq. after alg. 2):
            # dS = P * (dP - rowsum(dO * O)).
            d_logits = probs * (d_probs - delta_ref[g, span][:, None])
            dk = dk + lax.dot_general(
                d_logits.astype(queries.dtype), queries, _DOT_TN, preferred_element_type=config.acc
            )
            if dbias_ref is not None:
                dbias_ref[g, span, :] = d_logits
            return dk, dv

        carry = lax.fori_loop(first_q_block, num_q_blocks, body, carry)
        if dbias_ref is not None and config.is_causal:
            # The skipped blocks' bias gradient is 0, but the output buffer is uninitialised.
            def zero(i, _):
                span = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
                dbias_ref[g, span, :] = jnp.zeros((block_q, block_k), config.acc)

            lax.fori_loop(0, first_q_block, zero, None)
        return carry

    init = (
        jnp.zeros((block_k, dk_ref.shape[-1]), config.acc),
        jnp.zeros((block_k, dv_ref.shape[-1]), config.acc),
    )
    dk, dv = lax.fori_loop(0, num_groups, group, init)
    dk_ref[...] = (dk * config.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, config: _Config, has_bias: bool, has_mask: bool):
    """One query block of one query head; loops over key blocks (as the forward does)."""
    inputs, bias_ref, mask_ref, (dq_ref,) = _split(refs, has_bias, has_mask, num_inputs=6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = inputs
    block_q, block_k = config.block_q, config.block_k
    q_start = pl.program_id(1) * block_q
    queries, d_out = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]

    def body(j, dq):
        k_start = pl.multiple_of(j * block_k, block_k)
        span = pl.ds(k_start, block_k)
        keys = k_ref[span, :]
        logits = _masked_logits(
            queries,
            keys,
            q_start,
            k_start,
            _tile(bias_ref, slice(None), span),
            _tile(mask_ref, slice(None), span),
            config,
        )
        probs = jnp.exp(logits - lse[:, None])
        d_probs = lax.dot_general(
            d_out, v_ref[span, :], _DOT_QK, preferred_element_type=config.acc
        )
        d_logits = probs * (d_probs - delta[:, None])
        return dq + lax.dot_general(
            d_logits.astype(keys.dtype), keys, _DOT_NN, preferred_element_type=config.acc
        )

    num_kv_blocks = _num_kv_blocks_for(q_start, k_ref.shape[0] // block_k, config)
    dq = lax.fori_loop(0, num_kv_blocks, body, jnp.zeros(dq_ref.shape, config.acc))
    dq_ref[...] = (dq * config.scale).astype(dq_ref.dtype)


# --------------------------------------------------------------------------- pallas_calls


def _pairwise_spec(x: Array, num_heads: int, block_q: int, s_pad: int) -> pl.BlockSpec:
    """``[Nb, Nh, T, S]`` bias/mask rows for program ``(b * H + h, query block i)``."""
    nb, nh = x.shape[:2]

    def index(bh, i):
        return (bh // num_heads if nb > 1 else 0, bh % num_heads if nh > 1 else 0, i, 0)

    return pl.BlockSpec((None, None, block_q, s_pad), index)


def _forward(config: _Config, q, k, v, bias, mask):
    """Padded ``q [N, T, H, D]``, ``k [N, S, Hk, D]``, ``v [N, S, Hk, Dv]`` ->
    ``(out [N, T, H, Dv], lse [N, H, T] in config.acc)``."""
    n, t_pad, h, d = q.shape
    s_pad, hk, dv = v.shape[1:]
    groups = h // hk
    block_q = config.block_q

    def rows(bh, i):
        return (bh // h, i, bh % h, 0)

    def kv_head(bh, i):  # the query head's K/V head, no repeated copy of K/V
        return (bh // h, 0, (bh % h) // groups, 0)

    in_specs = [
        pl.BlockSpec((None, block_q, None, d), rows),
        pl.BlockSpec((None, s_pad, None, d), kv_head),
        pl.BlockSpec((None, s_pad, None, dv), kv_head),
    ]
    inputs = [q, k, v]
    for x in (bias, mask):
        if x is not None:
            inputs.append(x)
            in_specs.append(_pairwise_spec(x, h, block_q, s_pad))
    kernel = functools.partial(
        _forward_kernel, config=config, has_bias=bias is not None, has_mask=mask is not None
    )
    return pl.pallas_call(
        kernel,
        grid=(n * h, t_pad // block_q),
        in_specs=in_specs,
        out_specs=[
            pl.BlockSpec((None, block_q, None, dv), rows),
            pl.BlockSpec((None, None, block_q), lambda bh, i: (bh // h, bh % h, i)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((n, t_pad, h, dv), q.dtype),
            jax.ShapeDtypeStruct((n, h, t_pad), config.acc),
        ],
        compiler_params=_compiler_params(max(d, dv)),
        interpret=config.interpret,
        name="flash_attention_forward",
    )(*inputs)


def _backward_dkdv(config: _Config, q, k, v, d_out, lse, delta, bias, mask):
    """``(dk [N, S, Hk, D], dv [N, S, Hk, Dv], dbias [N, H, T, S] in config.acc | None)``."""
    n, t_pad, h, d = q.shape
    s_pad, hk, dv = v.shape[1:]
    groups = h // hk
    block_k = config.block_k

    # Group the query heads by the K/V head they read: free reshapes, no copies.
    def grouped(x):
        return x.reshape(n, t_pad, hk, groups, x.shape[-1])

    def kv_rows(b, j):
        return (b // hk, j, b % hk, 0)

    def whole_group(b, j):
        return (b // hk, 0, b % hk, 0, 0)

    def group_stats(b, j):
        return (b // hk, b % hk, 0, 0)

    in_specs = [
        pl.BlockSpec((None, t_pad, None, groups, d), whole_group),
        pl.BlockSpec((None, block_k, None, d), kv_rows),
        pl.BlockSpec((None, block_k, None, dv), kv_rows),
        pl.BlockSpec((None, t_pad, None, groups, dv), whole_group),
        pl.BlockSpec((None, None, groups, t_pad), group_stats),
        pl.BlockSpec((None, None, groups, t_pad), group_stats),
    ]
    inputs = [
        grouped(q),
        k,
        v,
        grouped(d_out),
        lse.reshape(n, hk, groups, t_pad),
        delta.reshape(n, hk, groups, t_pad),
    ]
    for x in (bias, mask):
        if x is None:
            continue
        nb, nh = x.shape[:2]
        x = x.reshape(nb, hk, groups, t_pad, s_pad) if nh > 1 else x[:, :, None]
        ng = x.shape[2]

        def index(b, j, nb=nb, nh=nh):
            return (b // hk if nb > 1 else 0, b % hk if nh > 1 else 0, 0, 0, j)

        inputs.append(x)
        in_specs.append(pl.BlockSpec((None, None, ng, t_pad, block_k), index))
    out_specs = [
        pl.BlockSpec((None, block_k, None, d), kv_rows),
        pl.BlockSpec((None, block_k, None, dv), kv_rows),
    ]
    out_shape = [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)]
    if bias is not None:
        # dBias = dS, one [T, S] slab per query head: O(N H T S) memory, which a bias that
        # already has T x S entries per head makes acceptable.
        out_specs.append(
            pl.BlockSpec(
                (None, None, groups, t_pad, block_k), lambda b, j: (b // hk, b % hk, 0, 0, j)
            )
        )
        out_shape.append(jax.ShapeDtypeStruct((n, hk, groups, t_pad, s_pad), config.acc))
    kernel = functools.partial(
        _dkdv_kernel, config=config, has_bias=bias is not None, has_mask=mask is not None
    )
    outs = pl.pallas_call(
        kernel,
        grid=(n * hk, s_pad // block_k),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=_compiler_params(max(d, dv)),
        interpret=config.interpret,
        name="flash_attention_backward_dkdv",
    )(*inputs)
    d_bias = outs[2].reshape(n, h, t_pad, s_pad) if bias is not None else None
    return outs[0], outs[1], d_bias


def _backward_dq(config: _Config, q, k, v, d_out, lse, delta, bias, mask):
    """``dq [N, T, H, D]``."""
    n, t_pad, h, d = q.shape
    s_pad, hk, dv = v.shape[1:]
    groups = h // hk
    block_q = config.block_q

    def rows(bh, i):
        return (bh // h, i, bh % h, 0)

    def kv_head(bh, i):
        return (bh // h, 0, (bh % h) // groups, 0)

    def stats(bh, i):
        return (bh // h, bh % h, i)

    in_specs = [
        pl.BlockSpec((None, block_q, None, d), rows),
        pl.BlockSpec((None, s_pad, None, d), kv_head),
        pl.BlockSpec((None, s_pad, None, dv), kv_head),
        pl.BlockSpec((None, block_q, None, dv), rows),
        pl.BlockSpec((None, None, block_q), stats),
        pl.BlockSpec((None, None, block_q), stats),
    ]
    inputs = [q, k, v, d_out, lse, delta]
    for x in (bias, mask):
        if x is not None:
            inputs.append(x)
            in_specs.append(_pairwise_spec(x, h, block_q, s_pad))
    kernel = functools.partial(
        _dq_kernel, config=config, has_bias=bias is not None, has_mask=mask is not None
    )
    return pl.pallas_call(
        kernel,
        grid=(n * h, t_pad // block_q),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((None, block_q, None, d), rows),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=_compiler_params(max(d, dv)),
        interpret=config.interpret,
        name="flash_attention_backward_dq",
    )(*inputs)


# --------------------------------------------------------------------------- custom VJP


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(config: _Config, q, k, v, bias, mask):
    return _forward(config, q, k, v, bias, mask)[0]


def _flash_fwd(config: _Config, q, k, v, bias, mask):
    out, lse = _forward(config, q, k, v, bias, mask)
    return out, (q, k, v, bias, mask, out, lse)


def _flash_bwd(config: _Config, residuals, d_out):
    q, k, v, bias, mask, out, lse = residuals
    # delta_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij (Dao 2023, sec. 3.1.2); O(N T H Dv),
    # so plain XLA is fine. Padded query rows have dO = 0 and so contribute nothing.
    delta = jnp.einsum("nthd,nthd->nht", out.astype(config.acc), d_out.astype(config.acc))
    dk, dv, d_bias = _backward_dkdv(config, q, k, v, d_out, lse, delta, bias, mask)
    dq = _backward_dq(config, q, k, v, d_out, lse, delta, bias, mask)
    if bias is not None:
        # Sum over the example/head axes the [Nb, Nh, T, S] bias was broadcast along.
        axes = tuple(axis for axis in (0, 1) if bias.shape[axis] == 1)
        d_bias = jnp.sum(d_bias, axis=axes, keepdims=True).astype(bias.dtype)
    return dq, dk, dv, d_bias, None


_flash.defvjp(_flash_fwd, _flash_bwd)
