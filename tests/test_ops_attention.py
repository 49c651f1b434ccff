"""dot_product_attention against jax.nn, flax.linen and a float64 NumPy re-computation."""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from attnjax import ops
from tests.reference import attention_float64

FP32_TOL = 1e-5
# One XLA compilation per call signature instead of one per primitive in eager mode.
STATIC = ("is_causal", "return_weights", "dropout_rate", "implementation", "scale")
attention = jax.jit(ops.dot_product_attention, static_argnames=STATIC)
jax_nn_attention = jax.jit(jax.nn.dot_product_attention, static_argnames=("is_causal",))

# (batch, T, S, H, Hk, D, Dv, use_mask, use_bias, is_causal)
CASES = [
    (2, 5, 5, 4, 4, 8, 8, False, False, False),
    (1, 7, 7, 2, 2, 16, 16, False, False, True),
    (3, 4, 9, 4, 4, 8, 8, True, False, False),
    (2, 6, 6, 4, 2, 8, 8, True, True, True),  # GQA
    (2, 5, 8, 8, 1, 4, 4, False, True, False),  # MQA
    (1, 3, 11, 6, 3, 8, 12, True, True, False),  # Dv != D
    (2, 9, 9, 4, 2, 32, 32, False, True, True),
]
CASE_IDS = [
    "plain",
    "causal",
    "mask-cross",
    "gqa-mask-bias-causal",
    "mqa-bias",
    "dv-differs",
    "gqa-bias-causal",
]


def make_inputs(case, seed=0, dtype=jnp.float32):
    # NumPy draws: eager jax.random ops would compile once per new shape.
    b, t, s, h, hk, d, dv, use_mask, use_bias, is_causal = case
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((b, t, h, d)), dtype)
    k = jnp.asarray(rng.standard_normal((b, s, hk, d)), dtype)
    v = jnp.asarray(rng.standard_normal((b, s, hk, dv)), dtype)
    mask = bias = None
    if use_mask:
        keep = rng.random((b, 1, t, s)) < 0.6
        keep[..., 0] = True  # no fully masked row here: jax.nn and flax differ on those
        mask = jnp.asarray(keep)
    if use_bias:
        bias = jnp.asarray(rng.standard_normal((1, h, t, s)), dtype)
    return q, k, v, mask, bias, is_causal


# jax.nn.dot_product_attention requires Dv == D.
@pytest.mark.parametrize("case", [c for c in CASES if c[5] == c[6]], ids=str)
def test_forward_matches_jax_nn(case):
    q, k, v, mask, bias, is_causal = make_inputs(case)
    ours = attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
    theirs = jax_nn_attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
    np.testing.assert_allclose(ours, theirs, atol=FP32_TOL, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_and_weights_match_float64_numpy(case):
    q, k, v, mask, bias, is_causal = make_inputs(case)
    out, weights = attention(
        q, k, v, bias=bias, mask=mask, is_causal=is_causal, return_weights=True
    )
    ref_out, ref_weights = attention_float64(
        q, k, v, bias=bias, mask=mask, is_causal=is_causal
    )
    np.testing.assert_allclose(out, ref_out, atol=FP32_TOL, rtol=0)
    np.testing.assert_allclose(weights, ref_weights, atol=FP32_TOL, rtol=0)


@pytest.mark.parametrize("case", [c for c in CASES if c[3] == c[4]], ids=str)
def test_forward_matches_flax_linen(case):
    # flax.linen.dot_product_attention has no GQA and no is_causal: give it the same mask.
    q, k, v, mask, bias, is_causal = make_inputs(case)
    t, s = q.shape[1], k.shape[1]
    full_mask = ops.combine_masks(mask, ops.causal_mask(t, s) if is_causal else None)
    ours = attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
    theirs = jax.jit(flax_nn.dot_product_attention)(q, k, v, bias=bias, mask=full_mask)
    np.testing.assert_allclose(ours, theirs, atol=FP32_TOL, rtol=0)


@pytest.mark.parametrize("case", CASES[2:5], ids=CASE_IDS[2:5])
def test_gradients_match_jax_nn(case):
    q, k, v, mask, bias, is_causal = make_inputs(case)
    cotangent = jnp.asarray(np.random.default_rng(9).standard_normal(q.shape[:-1] + v.shape[-1:]))

    def loss(fn, q, k, v, bias):
        return jnp.sum(fn(q, k, v, bias=bias, mask=mask, is_causal=is_causal) * cotangent)

    argnums = (1, 2, 3, 4) if bias is not None else (1, 2, 3)
    grad = jax.jit(jax.grad(loss, argnums), static_argnums=0)
    ours = grad(ops.dot_product_attention, q, k, v, bias)
    theirs = grad(jax.nn.dot_product_attention, q, k, v, bias)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=FP32_TOL, rtol=0)


@pytest.mark.parametrize("case", CASES[3:5], ids=CASE_IDS[3:5])
def test_gradients_pass_numerical_check_in_float64(case):
    with jax.enable_x64(True):
        q, k, v, mask, bias, is_causal = make_inputs(case, dtype=jnp.float64)

        @jax.jit
        def f(q, k, v, bias):
            return ops.dot_product_attention(
                q, k, v, bias=bias, mask=mask, is_causal=is_causal
            )

        check_grads(f, (q, k, v, bias), order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)


def test_float64_inputs_are_computed_in_float64():
    case = CASES[3]
    with jax.enable_x64(True):
        q, k, v, mask, bias, is_causal = make_inputs(case, dtype=jnp.float64)
        out = ops.dot_product_attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
        assert out.dtype == jnp.float64
        ref, _ = attention_float64(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
        np.testing.assert_allclose(out, ref, atol=1e-12, rtol=0)


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v, *_ = make_inputs(CASES[0])
    d = q.shape[-1]
    explicit = ops.dot_product_attention(q, k, v, scale=1.0 / np.sqrt(d))
    np.testing.assert_allclose(ops.dot_product_attention(q, k, v), explicit, atol=0, rtol=0)
    ref, _ = attention_float64(q, k, v, scale=1.0)
    np.testing.assert_allclose(ops.dot_product_attention(q, k, v, scale=1.0), ref, atol=1e-5)


def test_arbitrary_leading_batch_dims_match_flattened_batch():
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.standard_normal((2, 3, 5, 4, 8)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, 3, 6, 2, 8)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((2, 3, 6, 2, 8)), jnp.float32)
    out = attention(q, k, v)
    flat = attention(q.reshape(6, 5, 4, 8), k.reshape(6, 6, 2, 8), v.reshape(6, 6, 2, 8))
    np.testing.assert_allclose(out.reshape(6, 5, 4, 8), flat, atol=1e-6)
    # Unbatched [T, H, D] works too.
    np.testing.assert_allclose(attention(q[0, 0], k[0, 0], v[0, 0]), out[0, 0], atol=1e-6)


def test_additive_minus_inf_bias_counts_as_mask():
    q, k, v, mask, _, _ = make_inputs(CASES[2])
    bias = jnp.where(mask, 0.0, -jnp.inf)
    np.testing.assert_allclose(
        ops.dot_product_attention(q, k, v, bias=bias),
        ops.dot_product_attention(q, k, v, mask=mask),
        atol=1e-6,
    )


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=str)
def test_fully_masked_rows_give_zero_output_and_finite_grads(dtype):
    q, k, v, *_ = make_inputs(CASES[3], dtype=dtype)
    keep = np.ones((q.shape[0], 1, q.shape[1], k.shape[1]), bool)
    keep[:, :, 1] = False  # query row 1 of every example
    keep[0] = False  # every row of example 0
    mask = jnp.asarray(keep)

    @jax.jit
    def loss(q, k, v):
        out = ops.dot_product_attention(q, k, v, mask=mask, is_causal=True)
        return jnp.sum(out.astype(jnp.float32) ** 2), out

    (value, out), grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(q, k, v)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out[0], np.float32), 0.0)
    np.testing.assert_array_equal(np.asarray(out[:, 1], np.float32), 0.0)
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g, np.float32)))
    np.testing.assert_array_equal(np.asarray(grads[0][0], np.float32), 0.0)
    # The weights of a fully masked row are zeros, not uniform.
    _, weights = attention(q, k, v, mask=mask, return_weights=True)
    np.testing.assert_array_equal(np.asarray(weights[0]), 0.0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=str)
def test_low_precision_matches_float32_within_its_precision(dtype):
    q, k, v, mask, bias, is_causal = make_inputs(CASES[3])
    ref = ops.dot_product_attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal)
    out, weights = ops.dot_product_attention(
        q.astype(dtype), k.astype(dtype), v.astype(dtype),
        bias=bias, mask=mask, is_causal=is_causal, return_weights=True,
    )
    assert out.dtype == dtype and weights.dtype == jnp.float32
    tol = 5e-2 if dtype == jnp.bfloat16 else 5e-3
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=tol)


def test_fp16_logits_beyond_fp16_range_do_not_overflow():
    # q.k = 64 * 40 * 40 = 102400 > 65504, the fp16 maximum: logits must be float32.
    q = jnp.full((1, 2, 1, 64), 40.0, jnp.float16)
    k = jnp.full((1, 3, 1, 64), 40.0, jnp.float16)
    v = jnp.arange(3, dtype=jnp.float16).reshape(1, 3, 1, 1) * jnp.ones((1, 3, 1, 64), jnp.float16)
    out, weights = ops.dot_product_attention(q, k, v, scale=1.0, return_weights=True)
    assert np.all(np.isfinite(np.asarray(out, np.float32)))
    np.testing.assert_allclose(np.asarray(weights), 1.0 / 3.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out, np.float32), 1.0, atol=1e-3)


def test_dropout_is_inverted_and_deterministic_given_the_key():
    q, k, v, *_ = make_inputs(CASES[0])
    key = jax.random.key(3)
    a = ops.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=key)
    b = ops.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=key)
    c = ops.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=jax.random.key(4))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Inverted dropout keeps the expectation: average many masks against no dropout.
    keys = jax.random.split(jax.random.key(5), 2000)
    sample = lambda r: ops.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=r)  # noqa: E731
    mean = jnp.mean(jax.jit(jax.vmap(sample))(keys), axis=0)
    np.testing.assert_allclose(mean, ops.dot_product_attention(q, k, v), atol=0.08)


def test_weights_function_matches_weights_output():
    q, k, v, mask, bias, is_causal = make_inputs(CASES[3])
    _, weights = ops.dot_product_attention(
        q, k, v, bias=bias, mask=mask, is_causal=is_causal, return_weights=True
    )
    direct = ops.dot_product_attention_weights(
        q, k, bias=bias, mask=mask, is_causal=is_causal
    )
    np.testing.assert_array_equal(weights, direct)
