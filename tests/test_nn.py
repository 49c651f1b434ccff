"""Flax modules: parity with flax.linen, GQA, KV-cache decoding, transformer stacks."""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import nn, ops

POSITIONS = ["none", "sinusoidal", "learned", "rope", "alibi"]


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def tokens(seed, shape, vocab=17):
    return jnp.asarray(np.random.default_rng(seed).integers(1, vocab, shape), jnp.int32)


@pytest.mark.parametrize("normalize_qk", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_mha_equals_flax_mha_with_transplanted_params(cross, normalize_qk):
    x, memory = normal(0, (2, 5, 32)), normal(1, (2, 7, 24))
    mask = jnp.asarray(np.random.default_rng(2).random((2, 1, 5, 7 if cross else 5)) < 0.7)
    mask = mask.at[..., 0].set(True)
    inputs = (x, memory) if cross else (x,)
    flax_mha = flax_nn.MultiHeadDotProductAttention(
        num_heads=4, qkv_features=32, out_features=16, normalize_qk=normalize_qk
    )
    flax_params = flax_mha.init(jax.random.key(3), *inputs, mask=mask)
    ours = nn.MultiHeadAttention(
        num_heads=4, qkv_features=32, out_features=16, normalize_qk=normalize_qk
    )
    our_params = ours.init(jax.random.key(4), *inputs, mask=mask)
    assert jax.tree.structure(our_params) == jax.tree.structure(flax_params)
    for a, b in zip(jax.tree.leaves(our_params), jax.tree.leaves(flax_params), strict=True):
        assert a.shape == b.shape
    np.testing.assert_allclose(
        ours.apply(flax_params, *inputs, mask=mask),
        flax_mha.apply(flax_params, *inputs, mask=mask),
        atol=1e-5,
    )


def test_grouped_query_attention_equals_mha_with_repeated_kv_heads():
    x = normal(0, (2, 6, 32))
    gqa = nn.MultiHeadAttention(num_heads=8, num_kv_heads=2)
    params = gqa.init(jax.random.key(0), x)["params"]
    full = {name: dict(p) for name, p in params.items()}
    for name in ("key", "value"):  # query head h reads kv head h // 4
        full[name] = {
            "kernel": jnp.repeat(params[name]["kernel"], 4, axis=1),
            "bias": jnp.repeat(params[name]["bias"], 4, axis=0),
        }
    mha = nn.MultiHeadAttention(num_heads=8)
    np.testing.assert_allclose(
        gqa.apply({"params": params}, x, is_causal=True),
        mha.apply({"params": full}, x, is_causal=True),
        atol=1e-5,
    )
    assert params["key"]["kernel"].shape == (32, 2, 4)


def test_mha_sows_attention_weights_only_when_asked():
    x = normal(0, (2, 5, 16))
    module = nn.MultiHeadAttention(num_heads=4)
    params = module.init(jax.random.key(0), x)
    _, unasked = module.apply(params, x, is_causal=True, mutable=["intermediates"])
    assert not unasked  # a mutable collection alone is not a request
    out, state = module.apply(params, x, is_causal=True, sow_weights=True,
                              mutable=["intermediates"])
    (weights,) = state["intermediates"]["attention_weights"]
    assert weights.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    assert np.all(np.triu(np.asarray(weights), k=1) == 0)
    np.testing.assert_array_equal(module.apply(params, x, is_causal=True), out)


def test_attention_dropout_needs_an_rng_and_is_reproducible():
    x = normal(0, (2, 5, 16))
    module = nn.MultiHeadAttention(num_heads=4, dropout_rate=0.5)
    params = module.init(jax.random.key(0), x, deterministic=True)
    clean = module.apply(params, x, deterministic=True)
    a = module.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    b = module.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, clean)


@pytest.mark.parametrize("position", [None, "rope", "alibi"])
def test_mha_kv_cache_steps_equal_the_full_causal_pass(position):
    x = normal(0, (2, 7, 32))
    module = nn.MultiHeadAttention(num_heads=4, num_kv_heads=2, position=position)
    params = module.init(jax.random.key(0), x)["params"]
    full = module.apply({"params": params}, x, is_causal=True)
    decoder = nn.MultiHeadAttention(num_heads=4, num_kv_heads=2, position=position, decode=True)
    cache = decoder.init(jax.random.key(0), jnp.zeros_like(x))["cache"]
    step = jax.jit(lambda cache, x_t: decoder.apply(
        {"params": params, "cache": cache}, x_t, mutable=["cache"]))
    outs = []
    for t in range(x.shape[1]):
        out, mutated = step(cache, x[:, t : t + 1])
        cache = mutated["cache"]
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)
    assert int(cache["cache_index"]) == x.shape[1]


def lm_config(position, **overrides):
    return nn.TransformerConfig(
        vocab_size=17, model_dim=32, num_heads=4, num_kv_heads=2, num_layers=2, mlp_dim=64,
        max_len=12, position=position, dropout_rate=0.0, **overrides,
    )


@pytest.mark.parametrize("position", POSITIONS)
def test_lm_kv_cache_decoding_equals_full_forward_token_by_token(position):
    cfg = lm_config(position)
    ids = tokens(0, (2, 9))
    params = nn.DecoderOnlyLM(cfg).init(jax.random.key(0), ids)["params"]
    full = nn.DecoderOnlyLM(cfg).apply({"params": params}, ids)
    decoder = nn.DecoderOnlyLM(cfg.replace(decode=True))
    cache = decoder.init(jax.random.key(0), jnp.zeros((2, cfg.max_len), jnp.int32))["cache"]
    step = jax.jit(lambda cache, ids: decoder.apply(
        {"params": params, "cache": cache}, ids, mutable=["cache"]))
    # A 3-token prompt in one call, then one token at a time.
    logits, mutated = step(cache, ids[:, :3])
    pieces, cache = [logits], mutated["cache"]
    for t in range(3, ids.shape[1]):
        logits, mutated = step(cache, ids[:, t : t + 1])
        pieces.append(logits)
        cache = mutated["cache"]
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-4)


@pytest.fixture(scope="module")
def seq2seq():
    cfg = nn.TransformerConfig(
        vocab_size=19, target_vocab_size=13, model_dim=32, num_heads=4, num_layers=2,
        num_decoder_layers=1, mlp_dim=64, max_len=16, dropout_rate=0.1,
    )
    model = nn.EncoderDecoder(cfg)
    source = jnp.array([[4, 5, 6, 7, 0, 0], [8, 9, 3, 0, 0, 0]])
    target = jnp.array([[1, 2, 3, 4], [1, 5, 6, 0]])
    params = model.init(jax.random.key(0), source, target)["params"]
    return cfg, model, params, source, target


def test_encoder_decoder_shapes_and_captured_attention(seq2seq):
    cfg, model, params, source, target = seq2seq
    logits, state = model.clone(config=cfg.replace(sow_weights=True)).apply(
        {"params": params}, source, target, mutable=["intermediates"]
    )
    assert logits.shape == (2, 4, 13)
    inter = state["intermediates"]
    enc = inter["encoder"]["layer_1"]["self_attention"]["attention_weights"][0]
    cross = inter["decoder"]["layer_0"]["cross_attention"]["attention_weights"][0]
    dec = inter["decoder"]["layer_0"]["self_attention"]["attention_weights"][0]
    assert enc.shape == (2, 4, 6, 6) and cross.shape == (2, 4, 4, 6) and dec.shape == (2, 4, 4, 4)
    # Cross-attention never looks at source padding; padded encoder queries see nothing.
    np.testing.assert_array_equal(cross[1, :, :, 3:], 0.0)
    np.testing.assert_array_equal(enc[0, :, 4:], 0.0)
    assert "layer_1" not in inter["decoder"]  # num_decoder_layers=1


def test_extra_source_padding_does_not_change_the_logits(seq2seq):
    cfg, model, params, source, target = seq2seq
    longer = jnp.concatenate([source, jnp.zeros((2, 3), jnp.int32)], axis=1)
    np.testing.assert_allclose(
        model.apply({"params": params}, longer, target),
        model.apply({"params": params}, source, target),
        atol=1e-5,
    )


def test_decoder_is_causal_future_tokens_do_not_change_past_logits(seq2seq):
    cfg, model, params, source, target = seq2seq
    changed = target.at[:, 3].set(7)
    a = model.apply({"params": params}, source, target)
    b = model.apply({"params": params}, source, changed)
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not np.allclose(a[:, 3], b[:, 3])


def test_dropout_is_off_when_deterministic_and_on_with_an_rng(seq2seq):
    cfg, model, params, source, target = seq2seq
    clean = model.apply({"params": params}, source, target)
    noisy = model.apply({"params": params}, source, target, deterministic=False,
                        rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(clean, noisy)
    np.testing.assert_array_equal(clean, model.apply({"params": params}, source, target))


@pytest.mark.parametrize("pre_ln", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_layer_norm_placement_and_embedding_tying_change_the_parameters(pre_ln, tie):
    cfg = lm_config("learned", pre_ln=pre_ln, tie_embeddings=tie)
    params = nn.DecoderOnlyLM(cfg).init(jax.random.key(0), tokens(0, (1, 4)))["params"]
    decoder = params["decoder"]
    assert ("final_norm" in decoder) == pre_ln
    assert ("logits" in decoder) == (not tie)
    assert decoder["position"]["embedding"].shape == (12, 32)


def test_encoder_layer_is_the_ops_attention_plus_mlp():
    # One post-LN layer recomputed by hand from its parameters and ops.dot_product_attention.
    cfg = nn.TransformerConfig(
        vocab_size=5, model_dim=8, num_heads=2, mlp_dim=16, dropout_rate=0.0, pre_ln=False
    )
    x = normal(0, (1, 3, 8))
    layer = nn.EncoderLayer(cfg)
    p = layer.init(jax.random.key(0), x)["params"]
    a = p["self_attention"]
    q, k, v = (jnp.einsum("btf,fhd->bthd", x, a[n]["kernel"]) + a[n]["bias"]
               for n in ("query", "key", "value"))
    attn = jnp.einsum("bthd,hdf->btf", ops.dot_product_attention(q, k, v), a["out"]["kernel"])
    attn = attn + a["out"]["bias"]

    def layer_norm(h, params):
        mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mean) / jnp.sqrt(var + 1e-6) * params["scale"] + params["bias"]

    h = layer_norm(x + attn, p["attention_block"]["norm"])
    m = p["mlp"]
    mlp = jax.nn.relu(h @ m["wi"]["kernel"] + m["wi"]["bias"]) @ m["wo"]["kernel"] + m["wo"]["bias"]
    expected = layer_norm(h + mlp, p["mlp_block"]["norm"])
    np.testing.assert_allclose(layer.apply({"params": p}, x), expected, atol=1e-5)
