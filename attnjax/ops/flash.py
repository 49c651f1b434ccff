"""FlashAttention forward and backward as Pallas kernels (Dao et al. 2022; Dao 2023).

Same semantics as ``attnjax.ops.dot_product_attention`` (layout ``[..., T, H, D]``, bool
``mask`` with True = keep, additive ``bias`` where ``-inf`` counts as masked, GQA/MQA, fully
masked query rows give zeros, and every ``ops.structure.Structure``: causal top-left or
bottom-right, local windows, lengths, segment ids, prefix LM, ``mask_fn``, ``score_fn``), but
the ``[H, T, S]`` attention matrix is never stored: the forward pass streams key/value blocks
through an online softmax and saves only the output and the per-row logsumexp; the backward
pass recomputes the probabilities block by block.

The kernels are Triton-style ``pallas_call``s: a grid over ``(batch * heads, blocks)`` and a
``fori_loop`` over the other sequence axis, written to compile with Triton on NVIDIA GPUs
(the tests lower them for CUDA on any host; compiling and running them on a GPU is not tested
here). Everywhere else they run in Pallas interpret mode, which computes the same numbers but
slowly: it is there to test the kernels, not to be fast.

Structure, tile by tile. ``structure.block_schedule`` classifies every ``(query block, key
block)`` tile of each example as empty, full or partial (outside the kernels, O(number of
tiles) work; ``mask_fn`` is evaluated once per tile there). The forward and dQ programs (one
query block) loop only over their example's non-empty key blocks, the dK/dV programs (one
key block) only over its non-empty query blocks, read from that schedule: empty tiles are
never loaded or computed, for every part of the structure (causal with its offset, window,
lengths, segments, prefix, ``mask_fn``). Inside a visited tile the rule is
``structure.keep`` on absolute index arrays, skipped (``lax.cond``) on full tiles;
``score_fn`` is applied to every visited tile, and the backward kernels take its derivative
with ``jax.vjp`` on the recomputed tile. Arrays the two functions close over enter the
kernels as inputs (a kernel captures no arrays); the dQ kernel also accumulates the gradient
of ``score_fn``'s differentiable ones, per query block, summed outside. Lengths, prefix and
segment ids enter as small per-example inputs: no ``[T, S]`` array is formed.

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from attnjax.ops import structure as structure_lib
from attnjax.ops.chunked import large_negative
from attnjax.ops.structure import Structure

Array = jax.Array

_DOT_QK = (((1,), (1,)), ((), ()))  # [bq, D] x [bk, D] -> [bq, bk]
_DOT_TN = (((0,), (0,)), ((), ()))  # [bq, bk]^T x [bq, D] -> [bk, D]
_DOT_NN = (((1,), (0,)), ((), ()))  # [bq, bk] x [bk, D] -> [bq, D]

# Per-example scalars of a structure, as [N, 1] inputs read as [1, 1] by each program.
_SCALARS = ("q_lengths", "kv_lengths", "prefix")


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static (hashable) kernel parameters; block sizes are the clamped ones."""

    scale: float
    block_q: int
    block_k: int
    kv_length: int  # S before padding: keys at or beyond it are padding
    kv_padded: bool
    interpret: bool
    accumulate: str = "float32"  # dtype name of logits/statistics: promote(dtype, float32)
    # The static part of the call's Structure: causal offset, window, and mask_fn/score_fn in
    # their kernel form (the arrays they close over as trailing arguments); array fields
    # hold True where the call has that array (it travels in the kernels' inputs). None:
    # no structure.
    spec: Structure | None = None
    mask_consts: tuple[tuple[int, ...], ...] = ()  # shapes of the arrays mask_fn closes over
    score_consts: tuple[tuple[int, ...], ...] = ()  # and score_fn
    score_grads: tuple[bool, ...] = ()  # per score_fn array: whether it gets a gradient

    @property
    def acc(self):
        return jnp.dtype(self.accumulate)

    @property
    def neg(self):
        return large_negative(self.acc)

    @property
    def scheduled(self) -> bool:
        """Whether the kernels read a block schedule (the structure masks something)."""
        return self.spec is not None and self.spec.masks


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
    structure: Structure | None = None,
    return_residual: bool = False,
) -> Array | tuple[Array, Array]:
    """Memory-efficient scaled dot-product attention as a Pallas kernel, with its own VJP.

    Shapes are not validated here: ``attnjax.ops.dot_product_attention`` does that before it
    dispatches (and builds ``structure``). Call through it unless you know the inputs are
    well formed.

    Args:
      query: ``[..., T, H, D]`` queries.
      key: ``[..., S, Hk, D]`` keys; Hk divides H and query head ``h`` reads key/value head
        ``h // (H // Hk)`` (grouped-/multi-query attention). The K/V heads are never repeated.
      value: ``[..., S, Hk, Dv]`` values.
      bias: optional float array broadcastable to ``[..., H, T, S]``, added to the logits;
        ``-inf`` entries count as masked. It gets a gradient.
      mask: optional bool array broadcastable to ``[..., H, T, S]``; True = attend. No gradient.
      is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned, ``ops.causal_mask``);
        the same as a ``structure`` with ``causal=0``. Key blocks entirely above the diagonal
        are skipped, not computed and masked.
      scale: Python float logit scale; default ``1 / sqrt(D)``.
      block_q: query rows per kernel program (Br in the FlashAttention papers). Clamped to
        the smallest power of two >= max(T, 16) for short inputs. On GPU it must be a power of
        two >= 16 (a Triton requirement); interpret mode takes any size.
      block_k: keys per inner-loop step (Bc); clamped and constrained like ``block_q``.
      interpret: run the kernels in Pallas interpret mode. ``None``: interpret unless
        ``jax.default_backend() == "gpu"``.
      structure: an ``ops.structure.Structure`` (from ``structure.make_structure``; arrays
        flattened to ``N = prod(...)`` examples): empty tiles are skipped per example, full
        ones are not masked, ``score_fn`` is applied per tile, and arrays ``score_fn`` closes
        over get gradients. Its ``causal`` wins over ``is_causal``. On a GPU, ``mask_fn`` and
        ``score_fn`` must lower to Triton (elementwise arithmetic: no gathers such as
        ``table[head]``).
      return_residual: also return the log-sum-exp of each row's kept scaled scores,
        ``[..., T, H]`` (as ``jax.nn`` and ``chunked_attention``; no gradient flows through
        it; rows that see no key hold ``ops.chunked.large_negative``).

    Returns:
      ``out [..., T, H, Dv]`` in the dtype of ``query`` (and the residual, float32 or
      float64). Logits, softmax statistics and accumulators are float32 for float32/bf16/fp16
      inputs and float64 for float64 inputs (computed in float64: as accurate as
      ``implementation="xla"``; on a GPU that is Triton's float64 ``dot``, far slower than
      float32 and not tested on a GPU here). Query rows that see no key give zeros and zero
      gradients.
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
    if is_causal and (structure is None or structure.causal is None):
        structure = (structure or Structure()).replace(causal=0)
    _check_structure(structure, n, t, s)

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
        block_q=block_q,
        block_k=block_k,
        kv_length=s,
        kv_padded=s_pad != s,
        interpret=bool(interpret),
        accumulate=jnp.dtype(jnp.promote_types(query.dtype, jnp.float32)).name,
    )
    config, aux = _prepare_structure(config, structure, n=n, h=h, t=t, s=s)
    out, lse = _flash(config, queries, keys, values, bias, mask, aux)
    out = out[:, :t, :, :dv].reshape(*batch, t, h, dv)
    if not return_residual:
        return out
    # The kernels mark rows that saw no key with -neg (see _forward_kernel).
    lse = jnp.transpose(lse, (0, 2, 1))[:, :t].reshape(*batch, t, h)
    return out, lax.stop_gradient(jnp.where(lse == -config.neg, config.neg, lse))


# --------------------------------------------------------------------------- shapes


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def _short_block(length: int) -> int:
    # A block never needs to be longer than the sequence; keep it a power of two >= 16 so a
    # clamped block is still a valid Triton tile.
    return max(16, pl.next_power_of_2(length))


def _padded_head_dim(dim: int) -> int:
    return max(16, pl.next_power_of_2(dim))


def _pad(x: Array, sizes: dict[int, int], mode: str = "constant") -> Array:
    widths = [(0, sizes.get(axis, size) - size) for axis, size in enumerate(x.shape)]
    if all(hi == 0 for _, hi in widths):
        return x
    return jnp.pad(x, widths, mode=mode)


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


# --------------------------------------------------------------------------- structure


def _check_structure(st: Structure | None, n: int, t: int, s: int) -> None:
    """``ValueError`` naming the field when an array of ``st`` has the wrong shape."""
    if st is None:
        return
    expected = {"q_lengths": (n,), "kv_lengths": (n,), "prefix": (n,), "q_segments": (n, t),
                "kv_segments": (n, s)}
    for name, shape in expected.items():
        x = getattr(st, name)
        if x is not None and tuple(np.shape(x)) != shape:
            raise ValueError(
                f"flash_attention: `structure.{name}` must have shape {list(shape)} (the batch "
                f"dims flattened, as make_structure builds it), got {list(np.shape(x))}")
    if (st.q_segments is None) != (st.kv_segments is None):
        raise ValueError("flash_attention: `structure.q_segments` and `structure.kv_segments` "
                         "go together (make_structure fills in the second)")
    if st.prefix is not None and st.causal is None:
        raise ValueError("flash_attention: `structure.prefix` widens the causal mask (a prefix "
                         "LM) and needs `structure.causal`")


def _hoist(name: str, fn, *example):
    """``fn`` as a function of ``(*args, *consts)``, and ``consts``: every array ``fn`` closes
    over (traced or not) becomes an explicit argument, since a Pallas kernel may capture no
    array. Specialised to the shapes of ``example`` (those of one tile, the same in all three
    kernels). Also returns the output's aval."""
    closed = jax.make_jaxpr(fn)(*example)
    if len(closed.out_avals) != 1:
        raise ValueError(f"flash_attention: `{name}` must return one array, got "
                         f"{len(closed.out_avals)} outputs")
    out = closed.out_avals[0]

    def converted(*args):
        args, consts = args[: len(example)], args[len(example):]
        return jax.core.eval_jaxpr(closed.jaxpr, consts, *args)[0]

    return converted, tuple(closed.consts), out


def _prepare_structure(config: _Config, st: Structure | None, *, n, h, t, s):
    """``config`` with the static part of ``st``, and ``aux``: the traced part the kernels
    read (``_structure_inputs``): the packed schedules, the per-example arrays (padded to
    the blocked lengths) and the arrays ``mask_fn``/``score_fn`` close over."""
    aux = {"schedule": None, "schedule_t": None, "arrays": {}, "mask_consts": (),
           "score_consts": ()}
    if st is None:
        return config, aux
    bq, bk = config.block_q, config.block_k
    t_pad, s_pad = _round_up(t, bq), _round_up(s, bk)
    arrays = {name: getattr(st, name) for name in structure_lib.ARRAY_FIELDS
              if getattr(st, name) is not None}
    for name in _SCALARS:
        if name in arrays:
            arrays[name] = arrays[name].astype(jnp.int32).reshape(n, 1)
    if "q_segments" in arrays:
        arrays["q_segments"] = _pad(arrays["q_segments"].astype(jnp.int32), {1: t_pad}, "edge")
        arrays["kv_segments"] = _pad(arrays["kv_segments"].astype(jnp.int32), {1: s_pad},
                                     "edge")
    aux["arrays"] = arrays
    # One tile's index arrays, as the kernels pass them (forward layout [bq, bk]).
    index = (jnp.zeros((1, 1), jnp.int32), jnp.zeros((1, 1), jnp.int32),
             jnp.zeros((bq, 1), jnp.int32), jnp.zeros((1, bk), jnp.int32))
    changes = {name: (None if getattr(st, name) is None else True)
               for name in structure_lib.ARRAY_FIELDS}
    tile = jax.ShapeDtypeStruct((bq, bk), config.acc)
    if st.mask_fn is not None:
        changes["mask_fn"], consts, out = _hoist("mask_fn", st.mask_fn, *index)
        if out.dtype != jnp.bool_:
            raise TypeError(f"flash_attention: `mask_fn` must return booleans, got {out.dtype}")
        _check_broadcasts("mask_fn", out, tile)
        aux["mask_consts"] = tuple(jnp.atleast_1d(c) for c in consts)
        config = dataclasses.replace(config, mask_consts=tuple(np.shape(c) for c in consts))
    if st.score_fn is not None:
        changes["score_fn"], consts, out = _hoist("score_fn", st.score_fn,
                                                  jnp.zeros((bq, bk), config.acc), *index)
        if out.shape != tile.shape:
            raise ValueError(
                "flash_attention: `score_fn` must return an array of the score's shape "
                f"(elementwise in it), got {list(out.shape)} for a {list(tile.shape)} tile")
        aux["score_consts"] = tuple(jnp.atleast_1d(c) for c in consts)
        # Gradients for inexact arrays that may carry one (tracers); constants get none.
        grads = tuple(isinstance(c, jax.core.Tracer) and jnp.issubdtype(c.dtype, jnp.inexact)
                      for c in consts)
        config = dataclasses.replace(config, score_consts=tuple(np.shape(c) for c in consts),
                                     score_grads=grads)
    if st.masks:  # after the checks above: block_schedule calls mask_fn too
        aux["schedule"], aux["schedule_t"] = _schedules(
            st, n=n, h=h, t=t, s=s, block_q=bq, block_k=bk, n_q=t_pad // bq, n_k=s_pad // bk)
    return dataclasses.replace(config, spec=st.replace(**changes)), aux


def _check_broadcasts(name: str, out, tile) -> None:
    if jnp.broadcast_shapes(out.shape, tile.shape) != tile.shape:
        raise ValueError(f"flash_attention: `{name}` must return an array that broadcasts to "
                         f"the tile's {list(tile.shape)} (elementwise in the index arrays), "
                         f"got {list(out.shape)}")


def _schedules(st: Structure, *, n, h, t, s, block_q, block_k, n_q, n_k):
    """``structure.block_schedule`` per example, packed for the kernels: ``(forward [Ns,
    n_q, 1 + 2 n_k], transposed [Ns, n_k, 1 + 2 n_q])`` int32, ``Ns`` = N when a part of
    ``st`` can differ between examples (its arrays, ``mask_fn``), else 1. Row ``r`` of
    either: ``[count, visit[0..n), full[0..n)]`` (``_pack``)."""
    per_example = st.mask_fn is not None or any(v is not None for v in st.arrays.values())
    kwargs = dict(t=t, s=s, block_q=block_q, block_k=block_k, n_q=n_q, n_k=n_k,
                  has_dense_mask=False, nb=1, h=h, hk=h)

    def one(arrays, example):
        sub = st.replace(**{name: x[None] for name, x in arrays.items()})
        if st.mask_fn is not None:  # the schedule of one example sees batch index 0
            sub = sub.replace(mask_fn=lambda b, hh, q, k: st.mask_fn(b + example, hh, q, k))
        visit, count, full = structure_lib.block_schedule(sub, **kwargs)
        # Back to [n_q, n_k] matrices (visit is a permutation of each row).
        visited = jnp.arange(n_k, dtype=jnp.int32)[None, :] < count[:, None]
        kept = jnp.put_along_axis(jnp.zeros_like(visited), visit, visited, -1, inplace=False)
        full = jnp.put_along_axis(jnp.zeros_like(full), visit, full, -1, inplace=False)
        return kept, full

    arrays = {name: x for name, x in st.arrays.items() if x is not None}
    if per_example:
        kept, full = jax.vmap(one)(arrays, jnp.arange(n, dtype=jnp.int32))
    else:
        kept, full = (x[None] for x in one(arrays, 0))
    return _pack(kept, full), _pack(jnp.swapaxes(kept, 1, 2), jnp.swapaxes(full, 1, 2))


def _pack(kept, full):
    """``[Ns, R, C]`` bool (non-empty, full) -> ``[Ns, R, 1 + 2 C]`` int32 rows ``[count,
    visit, full]``: the non-empty columns in increasing order then the empty ones, and
    whether each visited tile is full."""
    visit = jnp.argsort(~kept, axis=-1, stable=True).astype(jnp.int32)
    count = jnp.sum(kept, axis=-1, dtype=jnp.int32)[..., None]
    full = jnp.take_along_axis(full & kept, visit, axis=-1).astype(jnp.int32)
    return jnp.concatenate([count, visit, full], axis=-1)


def _structure_inputs(config: _Config, aux, *, by_query: bool, heads: int, t_pad: int,
                      s_pad: int):
    """``(inputs, in_specs)`` of the schedule, the per-example arrays and the functions'
    arrays, in the order ``_split`` reads them, for a grid of programs ``(example * heads +
    head, block)``: query blocks (forward, dQ; ``by_query``) or key blocks (dK/dV)."""
    inputs, specs = [], []

    def add(x, block, index):
        inputs.append(x)
        specs.append(pl.BlockSpec(block, index))

    if config.scheduled:
        schedule = aux["schedule"] if by_query else aux["schedule_t"]
        per_example = schedule.shape[0] > 1
        add(schedule, (None, None, schedule.shape[2]),
            lambda p, i: (p // heads if per_example else 0, i, 0))
    arrays = aux["arrays"]
    for name in _SCALARS:
        if name in arrays:
            add(arrays[name], (1, 1), lambda p, i: (p // heads, 0))
    if "q_segments" in arrays:
        q_block, k_block = (config.block_q, s_pad) if by_query else (t_pad, config.block_k)
        add(arrays["q_segments"], (None, q_block),
            lambda p, i: (p // heads, i if by_query else 0))
        add(arrays["kv_segments"], (None, k_block),
            lambda p, i: (p // heads, 0 if by_query else i))
    for c in (*aux["mask_consts"], *aux["score_consts"]):
        add(c, c.shape, lambda p, i, rank=c.ndim: (0,) * rank)
    return inputs, specs


# --------------------------------------------------------------------------- kernels


class _Extras(NamedTuple):
    """The optional kernel refs (None where absent)."""

    bias: object
    mask: object
    schedule: object  # this program's row of the packed schedule
    arrays: dict  # per-example structure arrays present in the call
    mask_consts: tuple
    score_consts: tuple


class _Where(NamedTuple):
    """What the structure of one (program, head) needs: index arrays ``[1, 1]`` of the
    example and query head, the structure with this example's arrays in place, and the
    values of ``score_fn``'s arrays."""

    batch: Array
    head: Array
    st: Structure | None
    score_consts: tuple


def _split(refs, config: _Config, has_bias: bool, has_mask: bool, num_inputs: int):
    """Kernel refs ``(*inputs, [bias], [mask], <_structure_inputs>, *outputs)`` ->
    ``(inputs, _Extras, outputs)``."""
    inputs, rest = refs[:num_inputs], list(refs[num_inputs:])

    def take(present):
        return rest.pop(0) if present else None

    bias, mask, schedule = take(has_bias), take(has_mask), take(config.scheduled)
    spec = config.spec
    arrays = {}
    if spec is not None:
        for name in (*_SCALARS, "q_segments", "kv_segments"):
            if getattr(spec, name) is not None:
                arrays[name] = rest.pop(0)
    mask_consts = tuple(rest.pop(0) for _ in config.mask_consts)
    score_consts = tuple(rest.pop(0) for _ in config.score_consts)
    return inputs, _Extras(bias, mask, schedule, arrays, mask_consts, score_consts), rest


def _where(extras: _Extras, config: _Config, batch, head) -> _Where:
    """The ``_Where`` of program example ``batch`` and query head ``head`` (traced int32)."""
    spec = config.spec
    if spec is None:
        return _Where(None, None, None, ())
    changes = {name: extras.arrays[name][...] for name in _SCALARS if name in extras.arrays}
    if spec.mask_fn is not None:
        consts = [ref[...].reshape(shape)
                  for ref, shape in zip(extras.mask_consts, config.mask_consts, strict=True)]
        changes["mask_fn"] = lambda b, hh, q, k: spec.mask_fn(b, hh, q, k, *consts)
    score_consts = tuple(ref[...].reshape(shape)
                         for ref, shape in zip(extras.score_consts, config.score_consts,
                                               strict=True))
    return _Where(jnp.full((1, 1), batch, jnp.int32), jnp.full((1, 1), head, jnp.int32),
                  spec.replace(**changes), score_consts)


def _visit(schedule_ref, step, num_blocks: int):
    """The block a loop visits at ``step`` and whether that tile is full (all kept): the
    schedule row is ``[count, visit[num_blocks], full[num_blocks]]``; without a schedule
    every block in order, none known full."""
    if schedule_ref is None:
        return step, None
    return schedule_ref[1 + step], schedule_ref[1 + num_blocks + step] != 0


def _num_visits(schedule_ref, num_blocks: int):
    return num_blocks if schedule_ref is None else schedule_ref[0]


def _scores(queries, keys, q_start, k_start, bias, mask, q_seg, kv_seg, where: _Where,
            full, config: _Config, *, pullback: bool = False):
    """``[bq, D] x [bk, D] -> [bq, bk]`` logits in ``config.acc``: scaled, plus ``bias``,
    through ``score_fn``, then ``config.neg`` (the finite stand-in for -inf) wherever not
    attended. ``q_seg [bq]``, ``kv_seg [bk]``: the tile's segment ids (or None); ``full``:
    the tile keeps every score of the structure (its mask is skipped).

    With ``pullback``, also returns ``d(logits) -> (d(logits before score_fn), d(score_fn's
    differentiable arrays))``, the identity without ``score_fn``."""
    logits = lax.dot_general(queries, keys, _DOT_QK, preferred_element_type=config.acc)
    logits = logits * config.scale
    if bias is not None:
        logits = logits + bias.astype(config.acc)  # a -inf bias stays -inf: masked
    rows = q_start + jnp.arange(logits.shape[0], dtype=jnp.int32)[:, None]
    cols = k_start + jnp.arange(logits.shape[1], dtype=jnp.int32)[None, :]
    spec = config.spec
    vjp = None
    if spec is not None and spec.score_fn is not None:
        grads = config.score_grads
        fixed = [c for c, g in zip(where.score_consts, grads, strict=True) if not g]

        def score_fn(x, diff):
            diff, rest = list(diff), list(fixed)
            consts = [diff.pop(0) if g else rest.pop(0) for g in grads]
            return spec.score_fn(x, where.batch, where.head, rows, cols, *consts).astype(x.dtype)

        diff = tuple(c for c, g in zip(where.score_consts, grads, strict=True) if g)
        if pullback:
            logits, vjp = jax.vjp(score_fn, logits, diff)
        else:
            logits = score_fn(logits, diff)
    if mask is not None:
        logits = jnp.where(mask != 0, logits, config.neg)
    if config.scheduled:
        def masked(x):
            keep = structure_lib.keep(where.st, where.batch, where.head, rows, cols,
                                      None if q_seg is None else q_seg[:, None],
                                      None if kv_seg is None else kv_seg[None, :])
            if config.kv_padded:
                keep = _and(keep, cols < config.kv_length)
            return jnp.where(keep, x, config.neg)

        # A full tile never holds padded keys (block_schedule), so it needs no mask at all.
        logits = lax.cond(full, lambda x: x, masked, logits)
    elif config.kv_padded:
        logits = jnp.where(cols < config.kv_length, logits, config.neg)
    if not pullback:
        return logits
    return logits, (vjp if vjp is not None else lambda d: (d, ()))


def _and(a, b):
    return b if a is None else jnp.logical_and(a, b)


def _tile(ref, *index):
    return None if ref is None else ref[index]


def _forward_kernel(*refs, config: _Config, has_bias: bool, has_mask: bool, num_heads: int):
    (q_ref, k_ref, v_ref), extras, (out_ref, lse_ref) = _split(
        refs, config, has_bias, has_mask, num_inputs=3
    )
    block_q, block_k = config.block_q, config.block_k
    program = pl.program_id(0)
    q_start = pl.program_id(1) * block_q
    queries = q_ref[...]  # [bq, D]
    where = _where(extras, config, program // num_heads, program % num_heads)
    q_seg = _tile(extras.arrays.get("q_segments"), slice(None))
    kv_seg_ref = extras.arrays.get("kv_segments")
    num_kv_blocks = k_ref.shape[0] // block_k

    # Online softmax (Milakov & Gimelshein 2018; Dao 2023, alg. 1): a running row max, a
    # running row sum and an unnormalised accumulator, rescaled when the max grows.
    def body(step, carry):
        acc, row_max, row_sum = carry
        j, full = _visit(extras.schedule, step, num_kv_blocks)
        k_start = pl.multiple_of(j * block_k, block_k)
        span = pl.ds(k_start, block_k)
        logits = _scores(
            queries,
            k_ref[span, :],
            q_start,
            k_start,
            _tile(extras.bias, slice(None), span),
            _tile(extras.mask, slice(None), span),
            q_seg,
            _tile(kv_seg_ref, span),
            where,
            full,
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

    init = (
        jnp.zeros((block_q, out_ref.shape[-1]), config.acc),
        jnp.full((block_q,), config.neg, config.acc),
        jnp.zeros((block_q,), config.acc),
    )
    acc, row_max, row_sum = lax.fori_loop(
        0, _num_visits(extras.schedule, num_kv_blocks), body, init)
    seen = row_sum > 0  # False only for rows where every key is masked
    safe_sum = jnp.where(seen, row_sum, 1.0)
    out_ref[...] = (acc / safe_sum[:, None]).astype(out_ref.dtype)
    # A fully masked row stores -neg, the finite stand-in for the +inf "no key" marker; the
    # backward reads it as 0 (_flash_bwd), so that it recomputes exp(neg - 0) = 0.
    lse_ref[...] = jnp.where(seen, row_max + jnp.log(safe_sum), -config.neg)


def _dkdv_kernel(*refs, config: _Config, has_bias: bool, has_mask: bool, num_kv_heads: int):
    """One key block of one K/V head; loops over the G query heads reading it, then over the
    query blocks that see the key block."""
    inputs, extras, outputs = _split(refs, config, has_bias, has_mask, num_inputs=6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = inputs
    dk_ref, dv_ref, *dbias_ref = outputs
    dbias_ref = dbias_ref[0] if dbias_ref else None  # only when there is a bias
    bias_ref, mask_ref = extras.bias, extras.mask
    block_q, block_k = config.block_q, config.block_k
    program = pl.program_id(0)
    k_start = pl.program_id(1) * block_k
    keys, values = k_ref[...], v_ref[...]  # [bk, D], [bk, Dv]
    num_groups = q_ref.shape[1]
    num_q_blocks = q_ref.shape[0] // block_q
    num_visits = _num_visits(extras.schedule, num_q_blocks)
    q_seg_ref = extras.arrays.get("q_segments")
    kv_seg = _tile(extras.arrays.get("kv_segments"), slice(None))
    example, kv_head = program // num_kv_heads, program % num_kv_heads

    def group(g, carry):
        bias_g = g if bias_ref is not None and bias_ref.shape[0] > 1 else 0
        mask_g = g if mask_ref is not None and mask_ref.shape[0] > 1 else 0
        where = _where(extras, config, example, kv_head * num_groups + g)

        def body(step, carry):
            dk, dv = carry
            i, full = _visit(extras.schedule, step, num_q_blocks)
            q_start = pl.multiple_of(i * block_q, block_q)
            span = pl.ds(q_start, block_q)
            queries = q_ref[span, g, :]
            d_out = do_ref[span, g, :]
            logits, pullback = _scores(
                queries,
                keys,
                q_start,
                k_start,
                _tile(bias_ref, bias_g, span, slice(None)),
                _tile(mask_ref, mask_g, span, slice(None)),
                _tile(q_seg_ref, span),
                kv_seg,
                where,
                full,
                config,
                pullback=True,
            )
            probs = jnp.exp(logits - lse_ref[g, span][:, None])
            dv = dv + lax.dot_general(
                probs.astype(d_out.dtype), d_out, _DOT_TN, preferred_element_type=config.acc
            )
            d_probs = lax.dot_general(d_out, values, _DOT_QK, preferred_element_type=config.acc)
            # Softmax backward through the saved statistics (Dao 2023, eq. after alg. 2):
            # dS = P * (dP - rowsum(dO * O)); then back through score_fn.
            d_logits, _ = pullback(probs * (d_probs - delta_ref[g, span][:, None]))
            dk = dk + lax.dot_general(
                d_logits.astype(queries.dtype), queries, _DOT_TN, preferred_element_type=config.acc
            )
            if dbias_ref is not None:
                dbias_ref[g, span, :] = d_logits
            return dk, dv

        carry = lax.fori_loop(0, num_visits, body, carry)
        if dbias_ref is not None and config.scheduled:
            # The skipped tiles' bias gradient is 0, but the output buffer is uninitialised.
            def zero(step, _):
                i, _ = _visit(extras.schedule, step, num_q_blocks)
                span = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
                dbias_ref[g, span, :] = jnp.zeros((block_q, block_k), config.acc)

            lax.fori_loop(num_visits, num_q_blocks, zero, None)
        return carry

    init = (
        jnp.zeros((block_k, dk_ref.shape[-1]), config.acc),
        jnp.zeros((block_k, dv_ref.shape[-1]), config.acc),
    )
    dk, dv = lax.fori_loop(0, num_groups, group, init)
    dk_ref[...] = (dk * config.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, config: _Config, has_bias: bool, has_mask: bool, num_heads: int):
    """One query block of one query head; loops over key blocks (as the forward does). Also
    writes this program's share of the gradient of ``score_fn``'s arrays."""
    inputs, extras, (dq_ref, *dconst_refs) = _split(refs, config, has_bias, has_mask,
                                                     num_inputs=6)
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref = inputs
    block_q, block_k = config.block_q, config.block_k
    program = pl.program_id(0)
    q_start = pl.program_id(1) * block_q
    queries, d_out = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]
    where = _where(extras, config, program // num_heads, program % num_heads)
    q_seg = _tile(extras.arrays.get("q_segments"), slice(None))
    kv_seg_ref = extras.arrays.get("kv_segments")
    num_kv_blocks = k_ref.shape[0] // block_k

    def body(step, carry):
        dq, d_consts = carry
        j, full = _visit(extras.schedule, step, num_kv_blocks)
        k_start = pl.multiple_of(j * block_k, block_k)
        span = pl.ds(k_start, block_k)
        keys = k_ref[span, :]
        logits, pullback = _scores(
            queries,
            keys,
            q_start,
            k_start,
            _tile(extras.bias, slice(None), span),
            _tile(extras.mask, slice(None), span),
            q_seg,
            _tile(kv_seg_ref, span),
            where,
            full,
            config,
            pullback=True,
        )
        probs = jnp.exp(logits - lse[:, None])
        d_probs = lax.dot_general(
            d_out, v_ref[span, :], _DOT_QK, preferred_element_type=config.acc
        )
        d_logits, d_c = pullback(probs * (d_probs - delta[:, None]))
        d_consts = tuple(a + b.astype(a.dtype) for a, b in zip(d_consts, d_c, strict=True))
        dq = dq + lax.dot_general(
            d_logits.astype(keys.dtype), keys, _DOT_NN, preferred_element_type=config.acc
        )
        return dq, d_consts

    shapes = [shape for shape, g in zip(config.score_consts, config.score_grads, strict=True)
              if g]
    init = (jnp.zeros(dq_ref.shape, config.acc),
            tuple(jnp.zeros(shape, ref.dtype)
                  for ref, shape in zip(dconst_refs, shapes, strict=True)))
    dq, d_consts = lax.fori_loop(0, _num_visits(extras.schedule, num_kv_blocks), body, init)
    dq_ref[...] = (dq * config.scale).astype(dq_ref.dtype)
    for ref, d_c in zip(dconst_refs, d_consts, strict=True):
        ref[...] = d_c.reshape(ref.shape)


# --------------------------------------------------------------------------- pallas_calls


def _pairwise_spec(x: Array, num_heads: int, block_q: int, s_pad: int) -> pl.BlockSpec:
    """``[Nb, Nh, T, S]`` bias/mask rows for program ``(b * H + h, query block i)``."""
    nb, nh = x.shape[:2]

    def index(bh, i):
        return (bh // num_heads if nb > 1 else 0, bh % num_heads if nh > 1 else 0, i, 0)

    return pl.BlockSpec((None, None, block_q, s_pad), index)


def _forward(config: _Config, q, k, v, bias, mask, aux):
    """Padded ``q [N, T, H, D]``, ``k [N, S, Hk, D]``, ``v [N, S, Hk, Dv]`` ->
    ``(out [N, T, H, Dv], lse [N, H, T] in config.acc)``; rows that see no key hold
    ``lse = -config.neg``."""
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
    extra, extra_specs = _structure_inputs(config, aux, by_query=True, heads=h, t_pad=t_pad,
                                           s_pad=s_pad)
    kernel = functools.partial(
        _forward_kernel, config=config, has_bias=bias is not None, has_mask=mask is not None,
        num_heads=h,
    )
    return pl.pallas_call(
        kernel,
        grid=(n * h, t_pad // block_q),
        in_specs=in_specs + extra_specs,
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
    )(*inputs, *extra)


def _backward_dkdv(config: _Config, q, k, v, d_out, lse, delta, bias, mask, aux):
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
    extra, extra_specs = _structure_inputs(config, aux, by_query=False, heads=hk, t_pad=t_pad,
                                           s_pad=s_pad)
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
        _dkdv_kernel, config=config, has_bias=bias is not None, has_mask=mask is not None,
        num_kv_heads=hk,
    )
    outs = pl.pallas_call(
        kernel,
        grid=(n * hk, s_pad // block_k),
        in_specs=in_specs + extra_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=_compiler_params(max(d, dv)),
        interpret=config.interpret,
        name="flash_attention_backward_dkdv",
    )(*inputs, *extra)
    d_bias = outs[2].reshape(n, h, t_pad, s_pad) if bias is not None else None
    return outs[0], outs[1], d_bias


def _backward_dq(config: _Config, q, k, v, d_out, lse, delta, bias, mask, aux):
    """``(dq [N, T, H, D], d_consts)``: ``d_consts`` the gradients of ``score_fn``'s
    differentiable arrays, in order (``config.score_grads``)."""
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
    extra, extra_specs = _structure_inputs(config, aux, by_query=True, heads=h, t_pad=t_pad,
                                           s_pad=s_pad)
    # One partial gradient per program of each differentiable array of score_fn (summed
    # below): [N * H, query blocks, *shape].
    num_q_blocks = t_pad // block_q
    diff = [c for c, g in zip(aux["score_consts"], config.score_grads, strict=True) if g]
    out_specs = [pl.BlockSpec((None, block_q, None, d), rows)]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    for c in diff:
        c_acc = jnp.promote_types(c.dtype, config.acc)
        out_specs.append(pl.BlockSpec((None, None, *c.shape),
                                      lambda bh, i, rank=c.ndim: (bh, i) + (0,) * rank))
        out_shape.append(jax.ShapeDtypeStruct((n * h, num_q_blocks, *c.shape), c_acc))
    kernel = functools.partial(
        _dq_kernel, config=config, has_bias=bias is not None, has_mask=mask is not None,
        num_heads=h,
    )
    dq, *partial_grads = pl.pallas_call(
        kernel,
        grid=(n * h, num_q_blocks),
        in_specs=in_specs + extra_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=_compiler_params(max(d, dv)),
        interpret=config.interpret,
        name="flash_attention_backward_dq",
    )(*inputs, *extra)
    return dq, tuple(jnp.sum(p, axis=(0, 1)) for p in partial_grads)


# --------------------------------------------------------------------------- custom VJP


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(config: _Config, q, k, v, bias, mask, aux):
    """``(out, lse)``; the log-sum-exp is returned for ``return_residual`` and gets no
    gradient (its cotangent is ignored, as ``jax.nn``'s stop_gradient on it)."""
    return _forward(config, q, k, v, bias, mask, aux)


def _flash_fwd(config: _Config, q, k, v, bias, mask, aux):
    out, lse = _forward(config, q, k, v, bias, mask, aux)
    return (out, lse), (q, k, v, bias, mask, aux, out, lse)


def _flash_bwd(config: _Config, residuals, cotangents):
    q, k, v, bias, mask, aux, out, lse = residuals
    d_out, _ = cotangents
    # Rows that saw no key: subtract 0 (their logits are all neg, so exp() is 0), which keeps
    # neg - lse from overflowing.
    lse = jnp.where(lse == -config.neg, 0.0, lse)
    # delta_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij (Dao 2023, sec. 3.1.2); O(N T H Dv),
    # so plain XLA is fine. Padded query rows have dO = 0 and so contribute nothing.
    delta = jnp.einsum("nthd,nthd->nht", out.astype(config.acc), d_out.astype(config.acc))
    dk, dv, d_bias = _backward_dkdv(config, q, k, v, d_out, lse, delta, bias, mask, aux)
    dq, d_diff = _backward_dq(config, q, k, v, d_out, lse, delta, bias, mask, aux)
    if bias is not None:
        # Sum over the example/head axes the [Nb, Nh, T, S] bias was broadcast along.
        axes = tuple(axis for axis in (0, 1) if bias.shape[axis] == 1)
        d_bias = jnp.sum(d_bias, axis=axes, keepdims=True).astype(bias.dtype)
    d_aux = jax.tree_util.tree_map(lambda _: None, {**aux, "score_consts": ()})
    d_diff = list(d_diff)
    d_aux["score_consts"] = tuple(
        d_diff.pop(0).reshape(c.shape).astype(c.dtype) if g else None
        for c, g in zip(aux["score_consts"], config.score_grads, strict=True))
    return dq, dk, dv, d_bias, None, d_aux


_flash.defvjp(_flash_fwd, _flash_bwd)
