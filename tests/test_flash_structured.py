"""Structured attention (``ops.structure``) in the Pallas flash kernels against
``ops.dot_product_attention(implementation="xla")``, the dense reference: windows, causal
top-left and bottom-right with T != S, lengths, segment ids, prefix LM, ``mask_fn``,
``score_fn`` (ALiBi, soft-capping, a learned table) and compositions, forward, backward and
residual; that empty tiles are skipped, not masked; clear errors.

As in test_flash.py, the kernels run in Pallas interpret mode on the CPU: blocks of 16 so
that every case spans several tiles and some are skipped, few small shapes, and every case
jits its forward and VJP once at XLA optimisation level 0.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import ops
from attnjax.ops import flash as flash_lib
from attnjax.ops import structure as structure_lib
from attnjax.ops.chunked import large_negative
from attnjax.ops.flash import flash_attention
from tests.helpers import random_qkv as _qkv

TOL = 2e-5
BLOCKS = {"block_q": 16, "block_k": 16}
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _structured_kwargs(rng, b, t, s, h, parts):
    """``dot_product_attention``'s structured arguments for the named ``parts``, drawn at
    random (the generator of test_structured.py, with the parts chosen by name)."""
    kw = {}
    if "causal" in parts:
        kw["is_causal"] = True
    if "bottom_right" in parts:
        kw["is_causal"] = "bottom_right"
    if "window" in parts:
        kw["local_window_size"] = (int(rng.integers(0, t)), int(rng.integers(0, t)))
    if "lengths" in parts:
        kw["query_seq_lengths"] = jnp.asarray(rng.integers(1, t + 1, size=b), jnp.int32)
        kw["key_value_seq_lengths"] = jnp.asarray(rng.integers(1, s + 1, size=b), jnp.int32)
    if "segments" in parts:
        ids = lambda n: jnp.asarray(np.sort(rng.integers(0, 4, size=(b, n)), 1), jnp.int32)  # noqa: E731
        kw["query_segment_ids"], kw["key_value_segment_ids"] = ids(t), ids(s)
    if "prefix" in parts:
        kw["prefix_lengths"] = jnp.asarray(rng.integers(0, s + 1, size=b), jnp.int32)
    if "mask_fn" in parts:  # depends on batch and head too, so their indices must be right
        period = int(rng.integers(2, 9))
        kw["mask_fn"] = lambda bb, hh, qi, ki: (qi // period + bb + hh) % 3 != ki // period % 3
    if "alibi" in parts:
        kw["score_fn"] = ops.alibi_score_fn(h)  # per-head slopes, gathered by head index
    if "softcap" in parts:
        kw["score_fn"] = lambda sc, bb, hh, qi, ki: 2.0 * jnp.tanh(sc / 2.0)
    return kw


def _structure(q, k, kw):
    """The ``Structure`` that ``dot_product_attention`` builds from ``kw``."""
    kw = dict(kw)
    is_causal = kw.pop("is_causal", False)
    return structure_lib.make_structure(q.shape[:-3], q.shape[-3], k.shape[-3],
                                        is_causal=is_causal, **kw)


def _flash(q, k, v, bias, kw, **extra):
    return flash_attention(q, k, v, bias=bias, structure=_structure(q, k, kw),
                           return_residual=True, **BLOCKS, **extra)


def _reference(q, k, v, bias, kw):
    return ops.dot_product_attention(q, k, v, bias=bias, implementation="xla",
                                     return_residual=True, **kw)


def _run(fn, q, k, v, bias, kw, seed=7):
    """``(out, residual, (dq, dk, dv, dbias))`` of ``fn`` at a fixed random cotangent."""

    def run(q, k, v, bias):
        (out, lse), pullback = jax.vjp(lambda *a: fn(*a, kw), q, k, v, bias)
        cotangent = jax.random.normal(jax.random.key(seed), out.shape, out.dtype)
        return out, lse, pullback((cotangent, jnp.zeros_like(lse)))

    return jax.jit(run, compiler_options=FAST_COMPILE)(q, k, v, bias)


def _assert_close(got, want, name):
    assert got.shape == want.shape and got.dtype == want.dtype, name
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0, err_msg=name)


# name: (T, S, H, Hk, parts, bias)
CASES = {
    "window_cross_attention": (40, 33, 4, 2, ("window",), False),
    "causal_top_left_fewer_queries": (20, 45, 4, 2, ("causal",), False),
    "causal_bottom_right_with_alibi": (20, 45, 4, 2, ("bottom_right", "alibi"), False),
    "packed_segments_causal_softcap_bias": (40, 40, 2, 1, ("causal", "segments", "softcap"),
                                            True),
    "prefix_lm_with_kv_lengths": (40, 40, 4, 4, ("causal", "prefix", "lengths"), False),
    "ragged_lengths_more_queries_than_keys": (37, 29, 4, 1, ("lengths",), False),
    "mask_fn_and_window": (40, 40, 4, 2, ("mask_fn", "window"), False),
    "everything_bottom_right": (33, 40, 4, 2, ("bottom_right", "window", "lengths",
                                                "segments", "prefix", "mask_fn", "alibi"),
                                False),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_random_structures_match_the_dense_reference_forward_backward_and_residual(case):
    t, s, h, hk, parts, with_bias = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    q, k, v = _qkv(rng, 2, t, s, h, hk)
    bias = jnp.asarray(rng.normal(size=(h, t, s)), jnp.float32) if with_bias else None
    kw = _structured_kwargs(rng, 2, t, s, h, parts)
    out, lse, grads = _run(_flash, q, k, v, bias, kw)
    ref_out, ref_lse, ref_grads = _run(_reference, q, k, v, bias, kw)
    _assert_close(out, ref_out, "output")
    _assert_close(lse, ref_lse, "residual")
    for name, g, ref_g in zip(("dq", "dk", "dv", "dbias"), grads, ref_grads, strict=True):
        if ref_g is None:
            assert g is None, name
        else:
            _assert_close(g, ref_g, name)


def test_score_fn_closure_gets_its_gradient_through_the_recomputation():
    """Learned per-head ALiBi slopes and a relative-position table (T5-style) that
    ``score_fn`` closes over, beside an integer bucket array that gets no gradient."""
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng, 2, 37, 37, 4, 2)
    slopes = jnp.asarray(rng.uniform(0.1, 1.0, size=(4,)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(80,)), jnp.float32)
    buckets = jnp.asarray(np.arange(80) // 2, jnp.int32)

    def loss(slopes, table, q, implementation):
        def score_fn(sc, b, h, qi, ki):
            return sc - slopes[h] * jnp.abs(qi - ki) + table[buckets[qi - ki + 40]]

        kw = {"is_causal": True, "score_fn": score_fn}
        if implementation == "xla":
            out = ops.dot_product_attention(q, k, v, implementation="xla", **kw)
        else:
            out = flash_attention(q, k, v, structure=_structure(q, k, kw), **BLOCKS)
        return jnp.sum(out ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3,
                   compiler_options=FAST_COMPILE)
    ref, got = grad(slopes, table, q, "xla"), grad(slopes, table, q, "flash")
    for name, g, ref_g in zip(("d_slopes", "d_table", "dq"), got, ref, strict=True):
        assert float(jnp.abs(ref_g).max()) > 1e-3, name
        np.testing.assert_allclose(g, ref_g, atol=TOL, rtol=1e-4, err_msg=name)


@functools.cache
def _rows_that_see_no_key():
    """Example 1 has no key (kv length 0); queries 28.. of example 0 do not exist; rows 0..3
    see no key (bottom-right causal with T = S + 4); and flash's results beside the
    reference's, computed with no inf formed anywhere and no implicit rank promotion."""
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, 2, 40, 36, 2, 2)
    kw = {"query_seq_lengths": jnp.asarray([28, 40], jnp.int32),
          "key_value_seq_lengths": jnp.asarray([36, 0], jnp.int32),
          "is_causal": "bottom_right"}  # row i sees keys j <= i - 4
    empty = np.zeros((2, 40), bool)
    empty[0, 28:] = empty[1] = True
    empty[:, :4] = True
    with jax.debug_infs(True), jax.numpy_rank_promotion("raise"):
        return empty, _run(_flash, q, k, v, None, kw), _run(_reference, q, k, v, None, kw)


def test_fully_masked_rows_give_zero_output_and_zero_finite_grads():
    empty, (out, _, (dq, dk, dv, _)), (ref_out, _, ref_grads) = _rows_that_see_no_key()
    np.testing.assert_array_equal(np.asarray(out)[empty], 0.0)
    np.testing.assert_array_equal(np.asarray(dq)[empty], 0.0)
    np.testing.assert_array_equal(np.asarray(dk)[1], 0.0)  # example 1 has no key at all
    np.testing.assert_array_equal(np.asarray(dv)[1], 0.0)
    for g in (dq, dk, dv):
        assert np.all(np.isfinite(g))
    _assert_close(out, ref_out, "output")
    for name, g, ref_g in zip(("dq", "dk", "dv"), (dq, dk, dv), ref_grads[:3], strict=True):
        _assert_close(g, ref_g, name)


def test_return_residual_matches_reference_and_holds_large_negative_on_empty_rows():
    empty, (_, lse, _), (_, ref_lse, _) = _rows_that_see_no_key()
    assert lse.shape == (2, 40, 2) and lse.dtype == jnp.float32
    _assert_close(lse, ref_lse, "residual")
    np.testing.assert_array_equal(np.asarray(lse)[empty], large_negative(jnp.float32))
    assert np.all(np.asarray(lse)[~empty] > -1e3)


# name: (T, S, structured arguments, query rows and keys, per example of a batch of 2, that
# no tile needs): NaN there would leak into the outputs or the gradients (0 * NaN = NaN) had
# those tiles been computed and masked instead of skipped.
SKIPPED = {
    "lengths_per_example": (
        48, 48, {"query_seq_lengths": [16, 20], "key_value_seq_lengths": [20, 16]},
        ([16, 48], [32, 48]), ([32, 48], [16, 48])),
    "a_key_segment_no_query_has_and_a_key_block_mask_fn_drops": (
        48, 64, {"query_segment_ids": [[0] * 16 + [1] * 32] * 2,
                 "key_value_segment_ids": [[0] * 16 + [5] * 16 + [1] * 32] * 2,
                 "mask_fn": lambda b, h, qi, ki: ki // 16 != 3},
        ([], []), ([16, 32], [16, 32]), ([48, 64], [48, 64])),
    "window_beyond_the_queries": (
        16, 48, {"local_window_size": (0, 15)}, ([], []), ([32, 48], [32, 48])),
}


def _poison(x, *spans):
    """``x [B, L, ...]`` with NaN on each ``span[b] = [start, stop)`` of example ``b``."""
    x = np.array(x)
    for span in spans:
        for b, start_stop in enumerate(span):
            if start_stop:
                x[b, start_stop[0]:start_stop[1]] = np.nan
    return jnp.asarray(x)


@pytest.mark.parametrize("case", list(SKIPPED), ids=list(SKIPPED))
def test_empty_tiles_are_skipped_not_masked(case):
    t, s, kw, q_spans, *kv_spans = SKIPPED[case]
    kw = {name: jnp.asarray(x, jnp.int32) if isinstance(x, list) else x
          for name, x in kw.items()}
    q, k, v = _qkv(np.random.default_rng(2), 2, t, s, 2, 2)
    poisoned = _poison(q, q_spans), _poison(k, *kv_spans), _poison(v, *kv_spans)
    out, lse, grads = _run(_flash, *poisoned, None, kw)
    ref_out, ref_lse, ref_grads = _run(_reference, q, k, v, None, kw)
    _assert_close(out, ref_out, "output")
    _assert_close(lse, ref_lse, "residual")
    for name, g, ref_g in zip(("dq", "dk", "dv"), grads[:3], ref_grads[:3], strict=True):
        _assert_close(g, ref_g, name)  # zero on the poisoned rows, as the reference's


def test_schedules_visit_exactly_the_non_empty_tiles_of_each_example():
    """The packed schedules the kernels read (forward: key blocks per query block; dK/dV:
    query blocks per key block) against a brute-force classification of the dense rule:
    every non-empty tile is visited, in increasing order, and only all-kept ones are full.
    (``block_schedule`` bounds each part of the structure on its own, so a tile that only
    their combination empties may still be visited.)"""
    rng = np.random.default_rng(3)
    b, t, s, h = 2, 50, 45, 4
    q, k, _ = _qkv(rng, b, t, s, h, 2)
    kw = _structured_kwargs(rng, b, t, s, h, ("bottom_right", "window", "lengths", "segments",
                                              "prefix", "mask_fn"))
    st = _structure(q, k, kw)
    schedules = functools.partial(flash_lib._schedules, n=b, h=h, t=t, s=s, block_q=16,
                                  block_k=8, n_q=4, n_k=6)
    forward, transposed = jax.jit(schedules, compiler_options=FAST_COMPILE)(st)
    keep = np.asarray(jnp.broadcast_to(
        structure_lib.keep(st, *structure_lib.dense(st, b, h, t, s)), (b, h, t, s)))
    # Padded queries are not scores (they count as kept for "full"); padded keys never are.
    blocked = lambda rows: np.pad(  # noqa: E731
        np.pad(keep, ((0, 0), (0, 0), (0, 64 - t), (0, 0)), constant_values=rows),
        ((0, 0), (0, 0), (0, 0), (0, 48 - s))).reshape(b, h, 4, 16, 6, 8)
    tiles = blocked(False).any(axis=(1, 3, 5))  # [B, n_q, n_k]
    full = blocked(True).all(axis=(1, 3, 5))
    for packed, kept, all_kept in ((forward, tiles, full),
                                   (transposed, tiles.transpose(0, 2, 1),
                                    full.transpose(0, 2, 1))):
        packed = np.asarray(packed)
        n = kept.shape[2]
        for e in range(b):
            for r in range(kept.shape[1]):
                count, visit, is_full = packed[e, r, 0], packed[e, r, 1:1 + n], \
                    packed[e, r, 1 + n:]
                visited = list(visit[:count])
                assert visited == sorted(visited), (e, r)
                assert set(np.flatnonzero(kept[e, r])) <= set(visited), (e, r)
                assert all(all_kept[e, r, c] for c in visit[:count][is_full[:count] == 1])
        assert packed[..., 0].sum() < kept.size // 2  # most tiles are skipped


def test_dot_product_attention_passes_the_structure_and_residual_to_flash():
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, 2, 24, 24, 2, 2)
    kw = _structured_kwargs(rng, 2, 24, 24, 2, ("causal", "segments", "softcap"))

    def run(implementation):
        return jax.jit(lambda q: ops.dot_product_attention(
            q, k, v, implementation=implementation, return_residual=True, **kw),
            compiler_options=FAST_COMPILE)(q)

    (out, lse), (ref_out, ref_lse) = run("flash"), run("xla")
    _assert_close(out, ref_out, "output")
    _assert_close(lse, ref_lse, "residual")


def test_structured_kernels_lower_to_triton_for_gpu_on_any_host():
    # No GPU here: lower (not compile) all three kernels for CUDA with every part of a
    # structure, a bias, a dense mask and GQA. The functions are elementwise arithmetic:
    # Pallas' Triton lowering has no gather, so ALiBi here computes its slopes.
    rng = np.random.default_rng(5)
    q, k, v = _qkv(rng, 2, 37, 29, 4, 2)
    kw = _structured_kwargs(rng, 2, 37, 29, 4, ("bottom_right", "window", "lengths",
                                                "segments", "prefix", "mask_fn"))
    kw["score_fn"] = lambda sc, b, h, qi, ki: 2.0 * jnp.tanh(
        (sc - jnp.exp2(-1.0 - h) * jnp.abs(qi - ki)) / 2.0)
    st = _structure(q, k, kw)
    mask = jnp.ones((2, 1, 37, 29), bool)

    def loss(q, k, v, bias):
        return jnp.sum(flash_attention(q, k, v, bias=bias, mask=mask, structure=st,
                                       interpret=False, **BLOCKS))

    bias = jnp.zeros((4, 37, 29), jnp.float32)
    lowered = jax.jit(jax.grad(loss, (0, 1, 2, 3))).trace(q, k, v, bias)
    hlo = lowered.lower(lowering_platforms=("cuda",)).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 3  # forward, dK/dV, dQ


@pytest.mark.parametrize("structure, error, match", [
    (structure_lib.Structure(q_lengths=jnp.zeros((3,), jnp.int32)), ValueError,
     r"structure.q_lengths.*\[2\].*\[3\]"),
    (structure_lib.Structure(q_segments=jnp.zeros((2, 8), jnp.int32)), ValueError,
     "kv_segments"),
    (structure_lib.Structure(prefix=jnp.zeros((2,), jnp.int32)), ValueError, "causal"),
    (structure_lib.Structure(mask_fn=lambda b, h, qi, ki: qi - ki), TypeError, "booleans"),
    (structure_lib.Structure(score_fn=lambda sc, b, h, qi, ki: jnp.sum(sc)), ValueError,
     "score's shape"),
], ids=["lengths_shape", "segments_alone", "prefix_without_causal", "mask_fn_not_bool",
        "score_fn_not_elementwise"])
def test_bad_structures_raise_clear_errors_at_trace_time(structure, error, match):
    q, k, v = _qkv(np.random.default_rng(0), 2, 8, 8, 2, 2)
    with pytest.raises(error, match=match):
        jax.jit(lambda q: flash_attention(q, k, v, structure=structure)).trace(q)
