"""The ops and modules under jit, vmap, grad, pmap and sharded jit (8 virtual CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from attnjax import nn, ops

B, T, S, H, HK, D = 8, 6, 7, 4, 2, 8


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((B, T, H, D)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, S, HK, D)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((B, S, HK, D)), jnp.float32)
    lengths = jnp.asarray(rng.integers(1, S + 1, size=B))
    mask = ops.padding_mask_from_lengths(jnp.full((B,), T), T, lengths, S)
    return q, k, v, mask


def eager(q, k, v, mask):
    return ops.dot_product_attention(q, k, v, mask=mask, is_causal=True)


def chunked(q, k, v, mask):
    # Blocks smaller than T and S, not dividing them: the loops, padding and causal skip run.
    return ops.chunked_attention(q, k, v, mask=mask, is_causal=True, block_q=4, block_k=3)


ATTENTION = pytest.mark.parametrize("attend", [eager, chunked], ids=["xla", "chunked"])


def test_jit_equals_eager(inputs):
    np.testing.assert_allclose(jax.jit(eager)(*inputs), eager(*inputs), atol=1e-6)


def test_vmap_over_an_extra_axis_equals_the_batched_call(inputs):
    q, k, v, mask = inputs
    per_example = jax.vmap(lambda q, k, v, m: eager(q[None], k[None], v[None], m[None])[0])
    np.testing.assert_allclose(per_example(q, k, v, mask), eager(q, k, v, mask), atol=1e-6)
    # vmap over heads-as-batch of unbatched [T, H, D] inputs, with the mask broadcast.
    unbatched = jax.vmap(lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=True))
    np.testing.assert_allclose(
        unbatched(q, k, v), ops.dot_product_attention(q, k, v, is_causal=True), atol=1e-6
    )


@ATTENTION
def test_grad_through_jit_and_vmap_matches_plain_grad(inputs, attend):
    q, k, v, mask = inputs
    loss = lambda q, k, v: jnp.sum(attend(q, k, v, mask) ** 2)  # noqa: E731
    plain = jax.grad(loss, (0, 1, 2))(q, k, v)  # eager: op by op
    jitted = jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v)
    per_example = jax.vmap(
        jax.grad(lambda q, k, v, m: jnp.sum(attend(q[None], k[None], v[None], m[None]) ** 2),
                 (0, 1, 2))
    )(q, k, v, mask)
    for a, b, c in zip(plain, jitted, per_example, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)


@ATTENTION
def test_pmap_over_8_devices_equals_single_device(inputs, attend):
    assert jax.device_count() == 8, "conftest.py sets 8 virtual CPU devices"
    q, k, v, mask = inputs
    split = lambda x: x.reshape(8, B // 8, *x.shape[1:])  # noqa: E731
    out = jax.pmap(attend)(split(q), split(k), split(v), split(mask))
    np.testing.assert_allclose(out.reshape(q.shape), eager(q, k, v, mask), atol=1e-6)


@ATTENTION
def test_sharded_jit_over_batch_and_heads(inputs, attend):
    q, k, v, mask = inputs
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    heads = NamedSharding(mesh, P("data", None, "model", None))
    mask_sharding = NamedSharding(mesh, P("data"))
    placed = [jax.device_put(x, heads) for x in (q, k, v)] + [jax.device_put(mask, mask_sharding)]
    out = jax.jit(attend, out_shardings=heads)(*placed)
    assert out.sharding == heads
    np.testing.assert_allclose(out, eager(q, k, v, mask), atol=1e-6)


def test_transformer_lm_grad_under_pmap_matches_single_device():
    cfg = nn.TransformerConfig(
        vocab_size=11, model_dim=16, num_heads=4, num_kv_heads=2, mlp_dim=32, num_layers=1,
        max_len=8, dropout_rate=0.0, position="rope",
    )
    model = nn.DecoderOnlyLM(cfg)
    tokens = jnp.asarray(np.random.default_rng(1).integers(1, 11, size=(8, 6)))
    params = model.init(jax.random.key(0), tokens)["params"]

    def loss(params, tokens):
        logits = model.apply({"params": params}, tokens[:, :-1])
        labels = jax.nn.one_hot(tokens[:, 1:], cfg.vocab_size)
        return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * labels, -1))

    def pmapped_grad(params, tokens):
        return jax.lax.pmean(jax.grad(loss)(params, tokens), "devices")

    grads = jax.pmap(pmapped_grad, axis_name="devices", in_axes=(None, 0))(
        params, tokens.reshape(8, 1, 6)
    )
    expected = jax.jit(jax.grad(loss))(params, tokens)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a[0], b, atol=1e-5)
