"""The Pallas flash-attention kernel against ``ops.dot_product_attention(implementation="xla")``.

On CPU the kernels run in Pallas interpret mode, which compiles slowly: every case jits its
forward pass and its VJP together, once, at XLA optimisation level 0 (these tests check
numbers, not speed), and the shapes stay small (T, S <= 40, blocks of 16 so that every case
still spans several query and key blocks).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import ops
from attnjax.ops.flash import flash_attention

FP32_TOL = 2e-5
BLOCKS = {"block_q": 16, "block_k": 16}
# Halves the XLA compile time of the interpreted kernels, which dominates this file's runtime.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def normal(rng, shape, dtype=jnp.float32):
    # NumPy draws: eager jax.random ops would compile once per new shape.
    return jnp.asarray(rng.standard_normal(shape), dtype)


def make_qkv(batch=(2,), t=24, s=24, h=2, hk=2, d=8, dv=None, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = normal(rng, (*batch, t, h, d), dtype)
    k = normal(rng, (*batch, s, hk, d), dtype)
    v = normal(rng, (*batch, s, hk, dv or d), dtype)
    return q, k, v


def reference(q, k, v, bias=None, **kwargs):
    return ops.dot_product_attention(q, k, v, bias=bias, implementation="xla", **kwargs)


def flash(q, k, v, bias=None, **kwargs):
    return flash_attention(q, k, v, bias=bias, **BLOCKS, **kwargs)


def output_and_grads(fn, q, k, v, bias=None, **kwargs):
    """``fn``'s output and its VJP w.r.t. (q, k, v, bias) at a fixed random cotangent."""

    def run(q, k, v, bias):
        out, pullback = jax.vjp(lambda *args: fn(*args, **kwargs), q, k, v, bias)
        # Drawn in float32 for every dtype, so a bf16 run sees the float32 run's cotangent.
        cotangent = jax.random.normal(jax.random.key(7), out.shape, jnp.float32)
        return out, pullback(cotangent.astype(out.dtype))

    return jax.jit(run, compiler_options=FAST_COMPILE)(q, k, v, bias)


def assert_matches_reference(q, k, v, bias=None, atol=FP32_TOL, **kwargs):
    out, grads = output_and_grads(flash, q, k, v, bias, **kwargs)
    ref_out, ref_grads = output_and_grads(reference, q, k, v, bias, **kwargs)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    np.testing.assert_allclose(out, ref_out, atol=atol, rtol=0, err_msg="output")
    for name, g, ref_g in zip(("dq", "dk", "dv", "dbias"), grads, ref_grads, strict=True):
        if ref_g is None:
            assert g is None, name
            continue
        assert g.shape == ref_g.shape and g.dtype == ref_g.dtype, name
        np.testing.assert_allclose(g, ref_g, atol=atol, rtol=0, err_msg=name)
    return out, grads


def test_plain_attention_matches_reference():
    assert_matches_reference(*make_qkv())


def test_causal_attention_matches_reference():
    assert_matches_reference(*make_qkv(t=40, s=40), is_causal=True)


def test_ragged_lengths_not_divisible_by_blocks_match_reference():
    # T=37 and S=29 are padded to 48 and 32 inside; the padding must be invisible.
    assert_matches_reference(*make_qkv(t=37, s=29), is_causal=True)


def test_fully_masked_rows_give_zero_output_and_finite_grads():
    q, k, v = make_qkv(t=20, s=24)
    keep = np.random.default_rng(1).random((2, 1, 20, 24)) < 0.5
    keep[:, :, [0, 17]] = False  # query rows 0 and 17 of every example see nothing
    keep[1, :, :16] = False  # and the whole first query block of example 1
    out, (dq, dk, dv, _) = assert_matches_reference(q, k, v, mask=jnp.asarray(keep))
    np.testing.assert_array_equal(out[:, [0, 17]], 0.0)
    np.testing.assert_array_equal(out[1, :16], 0.0)
    np.testing.assert_array_equal(dq[:, [0, 17]], 0.0)
    for g in (dq, dk, dv):
        assert np.all(np.isfinite(g))


def test_bias_and_its_gradient_match_reference():
    # A [H, T, S] bias broadcast over the batch, with -inf entries acting as a mask.
    q, k, v = make_qkv(t=24, s=20)
    bias = np.random.default_rng(2).standard_normal((2, 24, 20)).astype(np.float32)
    bias[:, 10, 5:] = -np.inf
    bias[0, 12, :] = -np.inf  # a query row that only the bias masks, entirely
    assert_matches_reference(q, k, v, jnp.asarray(bias), is_causal=True)


@pytest.mark.parametrize("hk", [2, 1], ids=["gqa", "mqa"])
def test_grouped_and_multi_query_attention_match_reference(hk):
    assert_matches_reference(*make_qkv(t=20, s=20, h=4, hk=hk), is_causal=True)


def test_value_head_dim_differs_from_key_head_dim():
    assert_matches_reference(*make_qkv(t=20, s=20, d=8, dv=12))


def test_cross_attention_with_more_keys_than_queries():
    assert_matches_reference(*make_qkv(t=9, s=40))


def test_extra_batch_dims_with_broadcast_bias_and_mask_match_reference():
    # The bias varies over two of the three batch dims and is shared by the heads; the mask
    # is shared by the batch and drops whole query rows of one head. Both are flattened with
    # the batch, and the bias gradient is summed back over what it was broadcast along.
    q, k, v = make_qkv(batch=(2, 1, 2), t=17, s=17)
    rng = np.random.default_rng(3)
    bias = jnp.asarray(rng.standard_normal((2, 1, 2, 1, 17, 17)), jnp.float32)
    mask = jnp.asarray(rng.random((2, 17, 1)) < 0.8)
    assert_matches_reference(q, k, v, bias, mask=mask)


def test_vmap_over_an_extra_axis_matches_reference():
    # jit is covered everywhere (output_and_grads jits); here flash_attention runs under vmap.
    q, k, v = make_qkv(batch=(3, 1), t=20, s=20)
    vmapped = jax.vmap(lambda q, k, v, bias: flash(q, k, v, bias, is_causal=True))
    out, grads = output_and_grads(lambda *args: vmapped(*args), q, k, v)
    ref_out, ref_grads = output_and_grads(reference, q, k, v, is_causal=True)
    np.testing.assert_allclose(out, ref_out, atol=FP32_TOL, rtol=0)
    for g, ref_g in zip(grads[:3], ref_grads[:3], strict=True):
        np.testing.assert_allclose(g, ref_g, atol=FP32_TOL, rtol=0)


def test_causal_skips_key_blocks_above_the_diagonal():
    # One query block of 16 rows, keys 16..39 in blocks that lie wholly above the diagonal.
    # NaN there would leak into the result (0 * NaN = NaN) had those blocks been computed and
    # masked instead of skipped.
    q, k, v = make_qkv(t=16, s=40)
    above = np.arange(40)[:, None, None] >= 16  # key positions 16.. of [B, S, Hk, D]
    k_nan, v_nan = (jnp.asarray(np.where(above, np.nan, x)) for x in (k, v))
    out, (dq, dk, dv, _) = output_and_grads(flash, q, k_nan, v_nan, is_causal=True)
    seen_k, seen_v = (jnp.asarray(np.asarray(x)[:, :16]) for x in (k, v))
    ref_out, ref_grads = output_and_grads(reference, q, seen_k, seen_v, is_causal=True)
    np.testing.assert_allclose(out, ref_out, atol=FP32_TOL, rtol=0)
    for g, ref_g in zip((dq, dk[:, :16], dv[:, :16]), ref_grads[:3], strict=True):
        np.testing.assert_allclose(g, ref_g, atol=FP32_TOL, rtol=0)
    np.testing.assert_array_equal(dk[:, 16:], 0.0)
    np.testing.assert_array_equal(dv[:, 16:], 0.0)


def test_bfloat16_matches_float32_reference_loosely():
    q, k, v = make_qkv(t=20, s=20, h=4, hk=2, dtype=jnp.bfloat16)
    out, grads = output_and_grads(flash, q, k, v, is_causal=True)
    assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads[:3])
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    ref_out, ref_grads = output_and_grads(reference, *f32, is_causal=True)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref_out, atol=5e-2, rtol=0)
    for g, ref_g in zip(grads[:3], ref_grads[:3], strict=True):
        np.testing.assert_allclose(np.asarray(g, np.float32), ref_g, atol=5e-2, rtol=0)


def test_kernels_lower_to_triton_for_gpu_on_any_host():
    # No GPU here: lower (not compile) for CUDA, which runs the Pallas -> Triton IR lowering of
    # all three kernels and its checks (power-of-two tiles, supported primitives). Ragged T/S,
    # a head dim that needs padding, GQA, bias, mask and causal all take their GPU code paths.
    q, k, v = make_qkv(t=37, s=29, h=4, hk=2, d=8, dv=12)
    bias = jnp.zeros((4, 37, 29), jnp.float32)
    mask = jnp.ones((2, 1, 37, 29), bool)

    def loss(q, k, v, bias):
        out = flash(q, k, v, bias, mask=mask, is_causal=True, interpret=False)
        return jnp.sum(out)

    lowered = jax.jit(jax.grad(loss, (0, 1, 2, 3))).trace(q, k, v, bias)
    hlo = lowered.lower(lowering_platforms=("cuda",)).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 3  # forward, dK/dV, dQ


@pytest.mark.parametrize("blocks", [{"block_q": 0}, {"block_k": -16}], ids=str)
def test_block_sizes_below_one_raise(blocks):
    q, k, v = make_qkv(t=4, s=4)
    with pytest.raises(ValueError, match="block_q` and `block_k` must be >= 1"):
        flash_attention(q, k, v, **blocks)
