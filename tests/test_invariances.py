"""Property-based invariances of attention (hypothesis).

Shapes come from a short list so that each jitted function compiles a few times, while the
data, permutations, masks and offsets vary freely.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from attnjax import nn, ops

SHAPES = [(1, 5, 2, 8), (2, 8, 4, 4), (3, 3, 1, 16)]  # (B, L, H, D)
seeds = st.integers(0, 2**31 - 1)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@functools.cache
def self_attention_module(num_heads, features):
    module = nn.MultiHeadAttention(num_heads=num_heads, qkv_features=features)
    params = module.init(jax.random.key(0), jnp.zeros((1, 2, features)))
    return jax.jit(lambda x: module.apply(params, x))


@given(shape=st.sampled_from(SHAPES), seed=seeds, data=st.data())
def test_self_attention_without_positions_is_permutation_equivariant(shape, seed, data):
    b, length, h, d = shape
    perm = np.array(data.draw(st.permutations(range(length))))
    x = normal(seed, (b, length, h * d))
    apply = self_attention_module(h, h * d)
    np.testing.assert_allclose(apply(x[:, perm]), apply(x)[:, perm], atol=1e-5)


@functools.cache
def encoder(position):
    cfg = nn.TransformerConfig(
        vocab_size=13, model_dim=16, num_heads=2, mlp_dim=32, num_layers=2, max_len=16,
        position=position, dropout_rate=0.0,
    )
    model = nn.Encoder(cfg)
    params = model.init(jax.random.key(1), jnp.ones((1, 4), jnp.int32))
    return jax.jit(lambda tokens: model.apply(params, tokens))


@given(seed=seeds, length=st.integers(3, 8), data=st.data())
def test_encoder_is_order_blind_without_positions_and_order_aware_with_them(seed, length, data):
    tokens = jnp.asarray(np.random.default_rng(seed).integers(1, 13, (1, length)))
    perm = np.array(data.draw(st.permutations(range(length))))
    blind = encoder("none")
    np.testing.assert_allclose(blind(tokens[:, perm]), blind(tokens)[:, perm], atol=1e-5)
    # With sinusoidal positions a non-trivial reordering of distinct tokens changes outputs.
    moved = perm != np.arange(length)
    if moved.any() and len(set(np.asarray(tokens[0, moved]).tolist())) > 1:
        aware = encoder("sinusoidal")
        assert not np.allclose(aware(tokens[:, perm]), aware(tokens)[:, perm], atol=1e-4)


@given(seed=seeds, length=st.integers(2, 6), extra=st.integers(1, 6),
       position=st.sampled_from(["none", "sinusoidal", "learned", "rope", "alibi"]))
def test_padding_does_not_change_unpadded_encoder_outputs(seed, length, extra, position):
    tokens = np.random.default_rng(seed).integers(1, 13, (2, length))
    padded = np.concatenate([tokens, np.zeros((2, extra), int)], axis=1)
    run = encoder(position)
    np.testing.assert_allclose(
        run(jnp.asarray(padded))[:, :length], run(jnp.asarray(tokens)), atol=1e-5
    )


@given(shape=st.sampled_from(SHAPES), seed=seeds, extra=st.integers(1, 5))
def test_masked_extra_keys_do_not_change_the_output(shape, seed, extra):
    b, length, h, d = shape
    q, k, v = (normal(seed + i, (b, length, h, d)) for i in range(3))
    k_more = jnp.concatenate([k, normal(seed + 3, (b, extra, h, d)) * 100], axis=1)
    v_more = jnp.concatenate([v, normal(seed + 4, (b, extra, h, d)) * 100], axis=1)
    keep = jnp.arange(length + extra) < length
    attention = jax.jit(ops.dot_product_attention)
    out = attention(q, k_more, v_more, mask=keep)
    np.testing.assert_allclose(out, attention(q, k, v), atol=1e-5)


@jax.jit
def _weights(q, k, bias, mask):
    return ops.dot_product_attention_weights(q, k, bias=bias, mask=mask, is_causal=True)


@given(shape=st.sampled_from(SHAPES), seed=seeds, keep_prob=st.floats(0.05, 1.0))
def test_weight_rows_sum_to_one_or_are_all_zero(shape, seed, keep_prob):
    b, length, h, d = shape
    rng = np.random.default_rng(seed)
    q, k = normal(seed, (b, length, h, d)) * 3, normal(seed + 1, (b, length, h, d)) * 3
    bias = jnp.asarray(rng.standard_normal((h, length, length)) * 5, jnp.float32)
    mask = jnp.asarray(rng.random((b, 1, length, length)) < keep_prob)
    weights = np.asarray(_weights(q, k, bias, mask))
    visible = np.asarray(mask & ops.causal_mask(length)).any(-1)  # [B, 1, T]
    sums = weights.sum(-1)
    np.testing.assert_allclose(sums, np.broadcast_to(visible, sums.shape).astype(float), atol=1e-5)
    assert (weights >= 0).all()


@given(seed=seeds, m=st.integers(0, 60), n=st.integers(0, 60), shift=st.integers(0, 500))
def test_rope_scores_depend_only_on_relative_offset(seed, m, n, shift):
    q, k = normal(seed, (1, 1, 2, 16)), normal(seed + 1, (1, 1, 2, 16))

    def score(pos_q, pos_k):
        rq = ops.apply_rope(q, jnp.array([pos_q]))
        rk = ops.apply_rope(k, jnp.array([pos_k]))
        return np.asarray(jnp.sum(rq * rk, axis=-1))

    np.testing.assert_allclose(score(m + shift, n + shift), score(m, n), atol=2e-4)
