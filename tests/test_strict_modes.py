"""attnjax under JAX's strict modes: ``jax.debug_infs(True)``, ``numpy_rank_promotion("raise")``
and float64 (``enable_x64``), for every implementation (xla, chunked, flash in interpret mode)
and for the Flax models built on them.

* ``debug_infs`` checks the output of every primitive run eagerly (under ``jit`` only the
  outputs of the whole function), so the attention calls here run eagerly, not jitted: that
  is where a ``-inf`` placeholder used to raise ``FloatingPointError``.
* ``numpy_rank_promotion("raise")`` fails at trace time, so those calls are jitted.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import ops
from attnjax.nn import DecoderOnlyLM, Encoder, EncoderDecoder, TransformerConfig
from tests.reference import attention_float64

IMPLEMENTATIONS = ["xla", "chunked", "flash"]
FP32_TOL = 2e-5
B, T, S, H, HK, D = 2, 6, 7, 4, 2, 8


def normal(rng, shape, dtype=jnp.float32):
    # NumPy draws: eager jax.random ops would compile once per new shape.
    return jnp.asarray(rng.standard_normal(shape), dtype)


def qkv(seed=0, t=T, s=S, h=H, hk=HK, d=D, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return normal(rng, (B, t, h, d), dtype), normal(rng, (B, s, hk, d), dtype), normal(
        rng, (B, s, hk, d), dtype
    )


def attention(implementation, q, k, v, **kwargs):
    if implementation == "flash":  # blocks of 16 (the interpret-mode kernels of test_flash)
        from attnjax.ops.flash import flash_attention

        return flash_attention(q, k, v, block_q=16, block_k=16, interpret=True, **kwargs)
    return ops.dot_product_attention(q, k, v, implementation=implementation, **kwargs)


# --------------------------------------------------------------------------- debug_infs


def _padding_mask():
    """[B, 1, T, S]: example 1 has 2 padded keys and 1 padded query (a fully masked row);
    query row 0 of example 0 sees nothing either."""
    keep = np.ones((B, 1, T, S), bool)
    keep[1, :, :, -2:] = False
    keep[1, :, -1, :] = False
    keep[0, :, 0, :] = False
    return jnp.asarray(keep)


def _debug_infs_case(name):
    rng = np.random.default_rng(5)
    if name == "causal":
        return {"is_causal": True}
    if name == "padding":
        return {"mask": _padding_mask()}
    if name == "bias":
        return {"bias": normal(rng, (1, H, T, S))}
    # A padding mask over a bias that puts the masked keys ~1000 above the kept ones: a
    # masked logit's exp() would overflow had the mask been applied after it.
    mask = _padding_mask()
    bias = jnp.where(mask, 0.0, 1000.0) + normal(rng, (1, H, T, S))
    return {"mask": mask, "bias": bias, "is_causal": True}


@pytest.mark.parametrize("case", ["causal", "padding", "bias", "masked-logits-above-kept"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_forward_and_grad_under_debug_infs(implementation, case):
    q, k, v = qkv()
    kwargs = _debug_infs_case(case)
    bias = kwargs.pop("bias", None)

    def loss(q, k, v, bias):
        out = attention(implementation, q, k, v, bias=bias, **kwargs)
        return jnp.sum(jnp.sin(out)), out

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    with jax.debug_infs(True):  # eager: every primitive's output is checked
        (_, out), grads = jax.value_and_grad(loss, argnums, has_aux=True)(q, k, v, bias)
    ref, _ = attention_float64(q, k, v, bias=bias, **kwargs)
    np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    if "mask" in kwargs:  # fully masked rows: zero output, zero query gradient
        np.testing.assert_array_equal(out[0, 0], 0.0)
        np.testing.assert_array_equal(out[1, -1], 0.0)
        np.testing.assert_array_equal(grads[0][0, 0], 0.0)
        np.testing.assert_array_equal(grads[0][1, -1], 0.0)


def test_weights_and_masked_softmax_under_debug_infs():
    q, k, _ = qkv()
    mask = _padding_mask()
    with jax.debug_infs(True):
        weights = ops.dot_product_attention_weights(q, k, mask=mask, is_causal=True)
        grad = jax.grad(lambda x: jnp.sum(jnp.sin(ops.masked_softmax(x, mask))))(
            normal(np.random.default_rng(1), (B, H, T, S))
        )
    _, ref = attention_float64(q, k, k, mask=mask, is_causal=True)
    np.testing.assert_allclose(weights, ref, atol=FP32_TOL, rtol=0)
    np.testing.assert_array_equal(weights[0, :, 0], 0.0)  # fully masked: zeros, not uniform
    assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.slow  # eager shard_map: ~7 s
def test_ring_attention_forward_and_grad_under_debug_infs():
    from attnjax.ops.ring import ring_attention

    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("seq",))
    q, k, v = qkv(t=8, s=8)
    ring = functools.partial(ring_attention, mesh=mesh, is_causal=True, block_q=2, block_k=2)
    with jax.debug_infs(True):
        out = ring(q, k, v)
        grads = jax.grad(lambda *a: jnp.sum(jnp.sin(ring(*a))), (0, 1, 2))(q, k, v)
    ref = ops.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    ref_grads = jax.grad(
        lambda *a: jnp.sum(jnp.sin(ops.dot_product_attention(*a, is_causal=True))), (0, 1, 2)
    )(q, k, v)
    np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)
    for g, ref_g in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, ref_g, atol=FP32_TOL, rtol=0)


# --------------------------------------------------------------------------- rank promotion


def _rank_case(name):
    rng = np.random.default_rng(7)

    def mask(shape):
        keep = rng.random(shape) < 0.6
        keep[..., 0] = True  # no fully masked row: jax.nn averages the values there
        return jnp.asarray(keep)

    return {
        "mask-BHTS": {"mask": mask((B, H, T, S))},
        "mask-B1TS": {"mask": mask((B, 1, T, S))},
        "mask-TS": {"mask": mask((T, S))},
        "bias-1HTS": {"bias": normal(rng, (1, H, T, S))},
        "bias-TS": {"bias": normal(rng, (T, S))},
        "causal": {"is_causal": True},
        "causal-mask-TS-bias-HTS": {
            "mask": mask((T, S)), "bias": normal(rng, (H, T, S)), "is_causal": True,
        },
    }[name]


RANK_CASES = ["mask-BHTS", "mask-B1TS", "mask-TS", "bias-1HTS", "bias-TS", "causal",
              "causal-mask-TS-bias-HTS"]


@pytest.mark.parametrize("case", RANK_CASES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_small_cases_under_rank_promotion_raise_match_jax_nn(implementation, case):
    q, k, v = qkv(seed=1)
    kwargs = _rank_case(case)
    bias = kwargs.pop("bias", None)
    # T=6, S=7 and is_causal: jax.nn's causal mask is top-left aligned, as attnjax's.
    fns = {
        "ours": functools.partial(attention, implementation),
        "jax.nn": jax.nn.dot_product_attention,
    }

    def run(fn, q, k, v, bias):
        def loss(q, k, v, bias):
            out = fn(q, k, v, bias=bias, **kwargs)
            return jnp.sum(jnp.sin(out)), out

        argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
        return jax.value_and_grad(loss, argnums, has_aux=True)(q, k, v, bias)

    results = {}
    with jax.numpy_rank_promotion("raise"):
        for name, fn in fns.items():
            (_, out), grads = jax.jit(functools.partial(run, fn))(q, k, v, bias)
            results[name] = (out, grads)
    (out, grads), (ref, ref_grads) = results["ours"], results["jax.nn"]
    np.testing.assert_allclose(out, ref, atol=FP32_TOL, rtol=0)
    for g, ref_g in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, ref_g, atol=FP32_TOL, rtol=0)


def test_mask_and_position_helpers_under_rank_promotion_raise():
    x = normal(np.random.default_rng(2), (B, T, H, D))
    with jax.numpy_rank_promotion("raise"):
        combined = ops.combine_masks(ops.causal_mask(T), ops.padding_mask_from_lengths(
            jnp.asarray([T, 3]), T))
        encoding = ops.sinusoidal_encoding(T, 16)
        stepped = ops.sinusoidal_encoding(dim=16, positions=jnp.asarray([[3], [5]]))
        rotated = ops.apply_rope(x)  # positions [T] against x [B, T, H, D]
        per_example = ops.apply_rope(x, jnp.broadcast_to(jnp.arange(T), (B, T)))
        alibi = ops.alibi_bias(H, T, S)
    assert combined.shape == (B, 1, T, T) and encoding.shape == (T, 16)
    assert stepped.shape == (2, 1, 16) and alibi.shape == (H, T, S)
    np.testing.assert_array_equal(stepped[:, 0], ops.sinusoidal_encoding(6, 16)[np.array([3, 5])])
    np.testing.assert_allclose(rotated, per_example, atol=0, rtol=0)
    valid = np.arange(T) < np.array([[T], [3]])  # [B, T]
    expected = np.tril(np.ones((T, T), bool)) & valid[:, None, :, None] & valid[:, None, None, :]
    np.testing.assert_array_equal(combined, expected)


TINY = dict(
    vocab_size=40, model_dim=16, num_heads=2, num_kv_heads=1, num_layers=1, mlp_dim=32,
    max_len=16, dropout_rate=0.0,
)
TOKENS = np.array([[3, 7, 11, 2, 0, 0], [4, 5, 6, 7, 8, 9]], np.int32)  # 0 = padding


@pytest.mark.parametrize(
    "model, position",
    [
        ("DecoderOnlyLM", "learned"),
        ("DecoderOnlyLM", "alibi"),
        ("Encoder", "rope"),
        ("EncoderDecoder", "sinusoidal"),
    ],
)
def test_models_forward_and_grad_under_rank_promotion_raise(model, position):
    config = TransformerConfig(position=position, **TINY)
    tokens = jnp.asarray(TOKENS)
    module, args = {
        "DecoderOnlyLM": (DecoderOnlyLM(config), (tokens,)),
        "Encoder": (Encoder(config), (tokens,)),
        "EncoderDecoder": (EncoderDecoder(config), (tokens, tokens[:, :5])),
    }[model]
    with jax.numpy_rank_promotion("raise"):
        params = jax.jit(module.init)(jax.random.key(0), *args)
        loss = lambda p: jnp.mean(module.apply(p, *args) ** 2)  # noqa: E731
        value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("position", ["learned", "alibi"])
def test_kv_cache_decoding_under_rank_promotion_raise_equals_full_forward(position):
    # rope and sinusoidal decoding run under "raise" in tests/test_sampling.py (generate).
    config = TransformerConfig(position=position, pad_id=-1, **TINY)
    tokens = jnp.asarray(TOKENS)
    params = jax.jit(DecoderOnlyLM(config).init)(jax.random.key(1), tokens)["params"]
    decoder = DecoderOnlyLM(config.replace(decode=True))
    with jax.numpy_rank_promotion("raise"):
        full = jax.jit(DecoderOnlyLM(config).apply)({"params": params}, tokens)
        cache = jax.jit(decoder.init)(jax.random.key(0), jnp.zeros((B, config.max_len), jnp.int32))
        cache = cache["cache"]

        @jax.jit
        def step(cache, chunk):
            logits, variables = decoder.apply(
                {"params": params, "cache": cache}, chunk, mutable=["cache"]
            )
            return variables["cache"], logits

        cache, prefill = step(cache, tokens[:, :4])  # a prompt of 4, then one token a step
        steps = [prefill]
        for t in range(4, tokens.shape[1]):
            cache, logits = step(cache, tokens[:, t : t + 1])
            steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- float64


def test_flash_float64_is_computed_in_float64_and_restores_x64():
    before = jax.config.jax_enable_x64
    with jax.enable_x64(True):
        q, k, v = qkv(seed=3, t=20, s=24, dtype=jnp.float64)
        rng = np.random.default_rng(4)
        bias = normal(rng, (H, 20, 24), jnp.float64)
        keep = rng.random((B, 1, 20, 24)) < 0.7
        keep[0, :, 3] = False  # a fully masked row
        mask = jnp.asarray(keep)
        kwargs = {"bias": bias, "mask": mask, "is_causal": True}

        def run(implementation, q, k, v, bias):
            def loss(q, k, v, bias):
                out = attention(implementation, q, k, v, bias=bias, mask=mask, is_causal=True)
                return jnp.sum(jnp.sin(out)), out

            return jax.value_and_grad(loss, (0, 1, 2, 3), has_aux=True)(q, k, v, bias)

        (_, out), grads = jax.jit(functools.partial(run, "flash"))(q, k, v, bias)
        (_, _), ref_grads = jax.jit(functools.partial(run, "xla"))(q, k, v, bias)
        ref, _ = attention_float64(q, k, v, **kwargs)
        assert out.dtype == jnp.float64 and all(g.dtype == jnp.float64 for g in grads)
        # float32 accumulation would be off by ~1e-6 here (1.8e-5 relative was reported).
        np.testing.assert_allclose(out, ref, atol=1e-12, rtol=0)
        for g, ref_g in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(g, ref_g, atol=1e-12, rtol=0)
        np.testing.assert_array_equal(out[0, 3], 0.0)
    assert jax.config.jax_enable_x64 == before
