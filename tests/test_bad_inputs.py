"""Bad input fails at trace time with an error naming the argument and the shapes involved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import nn, ops

B, T, S, H, D = 2, 5, 6, 4, 8


def qkv(q_shape=(B, T, H, D), k_shape=(B, S, H, D), v_shape=(B, S, H, D), dtype=jnp.float32):
    return (jnp.zeros(q_shape, dtype), jnp.zeros(k_shape, dtype), jnp.zeros(v_shape, dtype))


def attend(*, q_shape=(B, T, H, D), k_shape=(B, S, H, D), v_shape=(B, S, H, D), **kwargs):
    q, k, v = qkv(q_shape, k_shape, v_shape)
    return lambda: ops.dot_product_attention(q, k, v, **kwargs)


def attend_arrays(q, k, v, **kwargs):
    return lambda: ops.dot_product_attention(q, k, v, **kwargs)


def mha(num_heads=4, features=32, inputs_shape=(B, T, 32), **kwargs):
    module = nn.MultiHeadAttention(num_heads=num_heads, qkv_features=features, **kwargs)
    return lambda: module.init(jax.random.key(0), jnp.zeros(inputs_shape))


f32 = jnp.zeros((B, T, H, D), jnp.float32)

# (id, thunk, error type, regex that must appear in the message)
BAD_INPUTS = [
    ("query-rank-2", attend(q_shape=(T, D), k_shape=(S, D), v_shape=(S, D)), ValueError,
     r"`query` must have shape \[\.\.\., T, H, D\].*\[5, 8\]"),
    ("key-rank-differs", attend(k_shape=(S, H, D)), ValueError,
     r"`key` must have the rank of `query`.*\[6, 4, 8\]"),
    ("value-rank-differs", attend(v_shape=(B, S, H, D, 1)), ValueError,
     r"`value` must have the rank of `query`.*\[2, 6, 4, 8, 1\]"),
    ("head-dim-mismatch", attend(k_shape=(B, S, H, 16)), ValueError,
     r"`key` head dim must equal `query` head dim D=8.*\[2, 6, 4, 16\]"),
    ("kv-length-mismatch", attend(v_shape=(B, S + 1, H, D)), ValueError,
     r"`value` must have shape \[\.\.\., S=6, Hk=4, Dv\].*\[2, 7, 4, 8\]"),
    ("kv-heads-mismatch", attend(v_shape=(B, S, 2, D)), ValueError,
     r"`value` must have shape \[\.\.\., S=6, Hk=4, Dv\].*\[2, 6, 2, 8\]"),
    ("heads-not-divisible", attend(k_shape=(B, S, 3, D), v_shape=(B, S, 3, D)), ValueError,
     r"key/value heads Hk=3 must divide query heads H=4"),
    ("batch-mismatch", attend(k_shape=(3, S, H, D), v_shape=(3, S, H, D)), ValueError,
     r"batch dims .* must match.*query \[2, 5, 4, 8\], key \[3, 6, 4, 8\]"),
    ("empty-query-sequence", attend(q_shape=(B, 0, H, D)), ValueError,
     r"empty sequence.*query \[2, 0, 4, 8\]"),
    ("empty-key-sequence", attend(k_shape=(B, 0, H, D), v_shape=(B, 0, H, D)), ValueError,
     r"empty sequence.*key \[2, 0, 4, 8\]"),
    ("mask-wrong-shape", attend(mask=jnp.ones((B, 1, T, S + 1), bool)), ValueError,
     r"`mask` must broadcast to \[\.\.\., H, T, S\] = \[2, 4, 5, 6\], got shape \[2, 1, 5, 7\]"),
    ("mask-not-boolean", attend(mask=jnp.ones((B, 1, T, S), jnp.float32)), TypeError,
     r"`mask` must be a boolean array.*float32"),
    ("mask-int", attend(mask=jnp.ones((T, S), jnp.int32)), TypeError,
     r"`mask` must be a boolean array.*int32"),
    ("bias-wrong-shape", attend(bias=jnp.zeros((H + 1, T, S))), ValueError,
     r"`bias` must broadcast to \[\.\.\., H, T, S\] = \[2, 4, 5, 6\], got shape \[5, 5, 6\]"),
    ("bias-not-float", attend(bias=jnp.zeros((T, S), jnp.int32)), TypeError,
     r"`bias` must be a floating-point array.*int32"),
    ("float64-float32-mix", attend_arrays(f32, np.zeros((B, S, H, D)), np.zeros((B, S, H, D))),
     TypeError, r"must share one dtype.*query float32, key float64"),
    ("bf16-f32-mix", attend_arrays(f32.astype(jnp.bfloat16), f32, f32), TypeError,
     r"must share one dtype.*query bfloat16"),
    ("integer-query", attend_arrays(jnp.zeros((B, T, H, D), jnp.int32), f32, f32), TypeError,
     r"`query` must be a floating-point array, got dtype int32"),
    ("dropout-rate-out-of-range", attend(dropout_rate=1.0, dropout_rng=jax.random.key(0)),
     ValueError, r"`dropout_rate` must be in \[0, 1\), got 1.0"),
    ("dropout-without-rng", attend(dropout_rate=0.1), ValueError,
     r"`dropout_rng` .* is required when dropout_rate=0.1"),
    ("unknown-implementation", attend(implementation="cuda"), ValueError,
     r"`implementation` must be None or one of .*'cuda'"),
    ("scale-not-scalar", attend(scale=jnp.ones(3)), ValueError,
     r"`scale` must be a scalar, got shape \[3\]"),
    ("mha-heads-not-dividing-features", mha(num_heads=3, features=32), ValueError,
     r"`num_heads`=3 must divide qkv_features=32"),
    ("mha-kv-heads-not-dividing-heads", mha(num_kv_heads=3), ValueError,
     r"`num_kv_heads`=3 must divide num_heads=4"),
    ("mha-inputs-rank-1", mha(inputs_shape=(32,)), ValueError,
     r"`inputs_q` must have shape \[\.\.\., T, F\], got \[32\]"),
    ("mha-unknown-position", mha(position="sinusoidal"), ValueError,
     r"`position` must be one of \(None, 'rope', 'alibi'\), got 'sinusoidal'"),
    ("mha-rope-odd-head-dim", mha(num_heads=4, features=12, position="rope"), ValueError,
     r"rope: head dim must be a positive even int, got 3"),
    ("config-unknown-position",
     lambda: nn.TransformerConfig(vocab_size=10, position="absolute"), ValueError,
     r"`position` must be one of .*got 'absolute'"),
    ("config-heads-not-dividing-model-dim",
     lambda: nn.TransformerConfig(vocab_size=10, model_dim=30, num_heads=4), ValueError,
     r"`num_heads`=4 must divide model_dim=30"),
    ("encoder-float-tokens",
     lambda: nn.Encoder(nn.TransformerConfig(vocab_size=10, model_dim=8, num_heads=2)).init(
         jax.random.key(0), jnp.zeros((2, 3))), ValueError,
     r"`tokens` must be integer token ids of shape \[B, L\], got shape \[2, 3\] dtype float32"),
    ("lengths-wrong-rank", lambda: ops.valid_from_lengths(jnp.ones((2, 2), jnp.int32), 4),
     ValueError, r"`lengths` must be an integer array of shape \[B\], got shape \[2, 2\]"),
    ("sinusoidal-odd-dim", lambda: ops.sinusoidal_encoding(4, 7), ValueError,
     r"`dim` must be a positive even int, got 7"),
]


@pytest.mark.parametrize(
    "thunk,error,message", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_raises_clear_error(thunk, error, message):
    with pytest.raises(error, match=message):
        thunk()


def test_errors_are_raised_at_trace_time_under_jit():
    q, k, v = qkv(k_shape=(B, S, H, 16))
    traced = jax.jit(ops.dot_product_attention)
    with pytest.raises(ValueError, match="head dim"):
        traced.lower(q, k, v)  # tracing alone, nothing compiled or run
