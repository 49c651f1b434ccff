"""Mask helpers, positional encodings and additive attention against hand-written references."""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import ops


def test_causal_mask_is_lower_triangular_and_offset_aligns_bottom_right():
    np.testing.assert_array_equal(ops.causal_mask(4), np.tril(np.ones((4, 4), bool)))
    np.testing.assert_array_equal(
        ops.causal_mask(2, 5, offset=3), np.tril(np.ones((2, 5), bool), k=3)
    )


def test_causal_mask_matches_flax_make_causal_mask():
    flax_mask = flax_nn.make_causal_mask(jnp.ones((1, 6)))  # [1, 1, 6, 6]
    np.testing.assert_array_equal(ops.causal_mask(6), flax_mask[0, 0])


def test_local_window_mask_band():
    mask = np.asarray(ops.local_window_mask(6, window=(2, 1)))
    i, j = np.indices((6, 6))
    np.testing.assert_array_equal(mask, (j >= i - 2) & (j <= i + 1))
    causal_window = ops.combine_masks(ops.causal_mask(6), ops.local_window_mask(6, window=(2, 0)))
    np.testing.assert_array_equal(causal_window, (j <= i) & (j >= i - 2))


def test_padding_masks_from_lengths_and_tokens_agree_with_flax():
    tokens = jnp.array([[5, 6, 7, 0, 0], [3, 0, 0, 0, 0]])
    from_tokens = ops.padding_mask_from_tokens(tokens)
    from_lengths = ops.padding_mask_from_lengths(jnp.array([3, 1]), 5)
    flax_mask = flax_nn.make_attention_mask(tokens > 0, tokens > 0)
    assert from_tokens.shape == (2, 1, 5, 5)
    np.testing.assert_array_equal(from_tokens, flax_mask)
    np.testing.assert_array_equal(from_lengths, flax_mask)


def test_cross_padding_mask_has_query_and_key_lengths():
    mask = ops.padding_mask_from_lengths(jnp.array([2]), 3, jnp.array([4]), 6)
    expected = np.zeros((1, 1, 3, 6), bool)
    expected[0, 0, :2, :4] = True
    np.testing.assert_array_equal(mask, expected)


def test_combine_masks_skips_none_and_rejects_non_boolean():
    a = jnp.array([True, False, True])
    assert ops.combine_masks(None, None) is None
    np.testing.assert_array_equal(ops.combine_masks(a, None), a)
    np.testing.assert_array_equal(ops.combine_masks(a, jnp.array([True, True, False])), [1, 0, 0])
    with pytest.raises(TypeError, match="boolean"):
        ops.combine_masks(a, jnp.ones(3))


def test_sinusoidal_encoding_matches_the_paper_formula():
    length, dim = 7, 10
    pe = np.asarray(ops.sinusoidal_encoding(length, dim))
    pos = np.arange(length)[:, None]
    i = np.arange(dim // 2)[None, :]
    angle = pos / 10000 ** (2 * i / dim)
    np.testing.assert_allclose(pe[:, 0::2], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1::2], np.cos(angle), atol=1e-6)
    # Explicit positions pick rows of the table (used when decoding step by step).
    np.testing.assert_allclose(
        ops.sinusoidal_encoding(dim=dim, positions=jnp.array([3, 5])), pe[[3, 5]], atol=1e-6
    )


def test_rope_preserves_norms_and_is_identity_at_position_zero():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 3, 8)), jnp.float32)
    rotated = ops.apply_rope(x)
    np.testing.assert_allclose(
        jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5
    )
    np.testing.assert_allclose(rotated[:, 0], x[:, 0], atol=1e-7)


def test_rope_matches_complex_rotation_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 1, 6))
    positions = np.array([0, 1, 5, 9])
    freqs = 1.0 / 10000 ** (np.arange(0, 6, 2) / 6)
    z = x[..., :3] + 1j * x[..., 3:]  # pair i with i + D/2
    z = z * np.exp(1j * positions[None, :, None, None] * freqs)
    expected = np.concatenate([z.real, z.imag], axis=-1)
    np.testing.assert_allclose(
        ops.apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(positions)), expected, atol=1e-5
    )


def test_alibi_slopes_follow_the_paper():
    np.testing.assert_allclose(ops.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    np.testing.assert_allclose(ops.alibi_slopes(4), [2.0 ** -(2 * (i + 1)) for i in range(4)])
    # 12 heads: the 8 slopes of 8 heads, then every other slope of 16 heads.
    sixteen = [2.0 ** (-(i + 1) / 2) for i in range(16)]
    expected = ops.alibi_slopes(8).tolist() + sixteen[0::2][:4]
    np.testing.assert_allclose(ops.alibi_slopes(12), expected)


def test_alibi_bias_is_minus_slope_times_distance():
    bias = np.asarray(ops.alibi_bias(2, 3, 4))
    distance = np.abs(np.arange(3)[:, None] - np.arange(4)[None, :])
    slopes = ops.alibi_slopes(2)
    np.testing.assert_allclose(bias, -slopes[:, None, None] * distance[None], atol=1e-7)


def test_additive_attention_matches_numpy_reference():
    rng = np.random.default_rng(2)
    qp, kp = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 4, 5))
    values, v = rng.standard_normal((2, 4, 6)), rng.standard_normal(5)
    mask = np.ones((2, 3, 4), bool)
    mask[1, :, 2:] = False
    mask[0, 2] = False  # a fully masked row
    qp32, kp32, values32, v32 = (jnp.asarray(a, jnp.float32) for a in (qp, kp, values, v))
    context, weights = ops.additive_attention(qp32, kp32, values32, v32, mask=jnp.asarray(mask))
    scores = np.einsum("tsa,a->ts", np.tanh(qp[0][:, None] + kp[0][None]), v)
    e = np.exp(scores[:2] - scores[:2].max(-1, keepdims=True))
    np.testing.assert_allclose(weights[0, :2], e / e.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(weights[0, 2], 0.0)
    np.testing.assert_array_equal(context[0, 2], 0.0)
    np.testing.assert_array_equal(weights[1, :, 2:], 0.0)
    np.testing.assert_allclose(context[0, :2], np.asarray(weights[0, :2]) @ values[0], atol=1e-5)
    grads = jax.grad(
        lambda q: jnp.sum(ops.additive_attention(q, kp32, values32, v32, mask=jnp.asarray(mask))[0])
    )(qp32)
    assert np.all(np.isfinite(grads))
