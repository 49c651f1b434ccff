"""The Flax modules take the structured attention arguments (local window, segment ids,
lengths, mask_fn/score_fn), sow weights only when asked, and follow flax's call conventions
(inputs_k/inputs_v, deterministic, param_dtype of the QK-norm)."""

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import analysis, nn, ops

B, T, F, H = 2, 12, 16, 2
WINDOW = (3, 1)
IMPLEMENTATIONS = ["xla", "chunked"]


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def tokens(seed, shape, vocab=23):
    return jnp.asarray(np.random.default_rng(seed).integers(1, vocab, shape), jnp.int32)


# Two rows of packed documents: contiguous runs of one id.
SEGMENTS = jnp.asarray([[1] * 5 + [2] * 4 + [3] * 3, [7] * 8 + [9] * 4], jnp.int32)


def segment_mask(q_ids, kv_ids):
    """``[B, 1, T, S]``: query and key in the same document (the reference, written out)."""
    return q_ids[:, None, :, None] == kv_ids[:, None, None, :]


def dense_mask(window=WINDOW, segments=SEGMENTS, causal=True):
    """The dense equivalent of causal + local window + segment ids, from ops.masks."""
    return ops.combine_masks(
        ops.causal_mask(T) if causal else None,
        ops.local_window_mask(T, window=window),
        segment_mask(segments, segments),
    )


@pytest.fixture
def spy(monkeypatch):
    """Records the keyword arguments of every ops.dot_product_attention call."""
    calls = []
    real = ops.dot_product_attention

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "dot_product_attention", recording)
    return calls


# ----------------------------------------------------------------- window and segment ids


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_mha_window_and_segment_ids_equal_the_dense_mask(implementation):
    x = normal(0, (B, T, F))
    lengths = jnp.asarray([T, 9], jnp.int32)
    structured = nn.MultiHeadAttention(num_heads=H, local_window_size=WINDOW,
                                       implementation=implementation)
    params = structured.init(jax.random.key(0), x)
    out = structured.apply(params, x, is_causal=True, query_segment_ids=SEGMENTS,
                           key_value_seq_lengths=lengths)
    keys_real = ops.valid_from_lengths(lengths, T)[:, None, None, :]
    reference = nn.MultiHeadAttention(num_heads=H, implementation="xla").apply(
        params, x, mask=ops.combine_masks(dense_mask(), keys_real))
    np.testing.assert_allclose(out, reference, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_mha_mask_fn_and_score_fn_equal_the_dense_mask_and_bias(implementation):
    x = normal(1, (B, T, F))
    module = nn.MultiHeadAttention(num_heads=H, implementation=implementation)
    params = module.init(jax.random.key(0), x)
    out = module.apply(params, x, mask_fn=lambda b, h, q, k: (q + k) % 3 != 1,
                       score_fn=lambda s, b, h, q, k: s + 0.1 * (h + 1) * (q - k))
    q, k = np.arange(T)[:, None], np.arange(T)[None, :]
    bias = jnp.asarray(0.1 * np.arange(1, H + 1)[:, None, None] * (q - k), jnp.float32)
    reference = nn.MultiHeadAttention(num_heads=H, implementation="xla").apply(
        params, x, mask=jnp.asarray((q + k) % 3 != 1), bias=bias)
    np.testing.assert_allclose(out, reference, atol=1e-5)


def lm_config(**overrides):
    fields = dict(vocab_size=23, model_dim=F, num_heads=H, num_layers=1, mlp_dim=32,
                  max_len=T, dropout_rate=0.0, position="rope")
    return nn.TransformerConfig(**{**fields, **overrides})


def with_self_attention_mask(mask):
    """An interceptor adding ``mask`` to every self-attention call: the dense reference,
    through the very same modules and parameters."""

    def interceptor(next_fun, args, kwargs, context):
        if (context.method_name == "__call__" and context.module.name == "self_attention"
                and isinstance(context.module, nn.MultiHeadAttention)):
            kwargs = {**kwargs, "mask": ops.combine_masks(kwargs.get("mask"), mask)}
        return next_fun(*args, **kwargs)

    return flax_nn.intercept_methods(interceptor)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_lm_window_and_segment_ids_equal_the_dense_mask(implementation):
    # RoPE is relative, so the structured model and the dense reference (which knows
    # nothing of documents) see the same positions.
    ids = tokens(0, (B, T))
    cfg = lm_config(local_window_size=WINDOW, attention_implementation=implementation)
    params = nn.DecoderOnlyLM(cfg).init(jax.random.key(0), ids)
    out = nn.DecoderOnlyLM(cfg).apply(params, ids, segment_ids=SEGMENTS)
    with with_self_attention_mask(dense_mask()):
        reference = nn.DecoderOnlyLM(lm_config(attention_implementation="xla")).apply(
            params, ids)
    np.testing.assert_allclose(out, reference, atol=1e-4)


@pytest.mark.parametrize(("position", "implementation"),
                         [("learned", "chunked"), ("alibi", "xla")])
def test_packed_documents_give_the_logits_of_each_document_alone(position, implementation):
    # Learned (and sinusoidal) positions restart at 0 in every document
    # (ops.segment_positions); ALiBi and RoPE are relative and need no reset.
    cfg = lm_config(position=position, attention_implementation=implementation)
    model = nn.DecoderOnlyLM(cfg)
    ids = tokens(1, (1, T))
    params = model.init(jax.random.key(0), ids)
    apply = jax.jit(model.apply)
    packed = apply(params, ids, segment_ids=SEGMENTS[1:])
    for start, stop in [(0, 8), (8, 12)]:
        alone = apply(params, ids[:, start:stop])
        np.testing.assert_allclose(packed[:, start:stop], alone, atol=1e-4,
                                   err_msg=f"document {start}:{stop}")


def test_packed_source_target_pairs_give_the_logits_of_each_pair_alone():
    cfg = lm_config(position="learned", target_vocab_size=19)
    model = nn.EncoderDecoder(cfg)
    source, target = tokens(2, (1, T)), tokens(3, (1, 10), vocab=19)
    source_ids = jnp.asarray([[1] * 7 + [2] * 5])
    target_ids = jnp.asarray([[1] * 4 + [2] * 6])
    params = model.init(jax.random.key(0), source, target)
    apply = jax.jit(model.apply)
    packed = apply(params, source, target, source_segment_ids=source_ids,
                   target_segment_ids=target_ids)
    first = apply(params, source[:, :7], target[:, :4])
    second = apply(params, source[:, 7:], target[:, 4:])
    np.testing.assert_allclose(packed[:, :4], first, atol=1e-4)
    np.testing.assert_allclose(packed[:, 4:], second, atol=1e-4)
    with pytest.raises(ValueError, match="both `source_segment_ids` and `target_segment_ids`"):
        model.apply(params, source, target, source_segment_ids=source_ids)


def test_lm_kv_cache_decoding_with_a_sliding_window_equals_the_full_forward():
    cfg = lm_config(position="alibi", local_window_size=(3, 0))
    ids = tokens(4, (B, 9))
    params = nn.DecoderOnlyLM(cfg).init(jax.random.key(0), ids)["params"]
    full = nn.DecoderOnlyLM(cfg).apply({"params": params}, ids)
    decoder = nn.DecoderOnlyLM(cfg.replace(decode=True))
    cache = decoder.init(jax.random.key(0), jnp.zeros((B, cfg.max_len), jnp.int32))["cache"]
    step = jax.jit(lambda cache, ids: decoder.apply(
        {"params": params, "cache": cache}, ids, mutable=["cache"]))
    logits, mutated = step(cache, ids[:, :4])  # a prompt, then one token at a time
    pieces, cache = [logits], mutated["cache"]
    for t in range(4, ids.shape[1]):
        logits, mutated = step(cache, ids[:, t : t + 1])
        pieces.append(logits)
        cache = mutated["cache"]
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-4)


def test_alibi_goes_in_as_a_score_fn_and_equals_the_dense_bias(spy):
    x = normal(2, (B, T, F))
    module = nn.MultiHeadAttention(num_heads=4, position="alibi", implementation="chunked")
    params = module.init(jax.random.key(0), x)
    spy.clear()
    out = module.apply(params, x, is_causal=True)
    (call,) = spy
    assert call["bias"] is None and call["score_fn"] is not None  # no [H, T, S] array
    reference = nn.MultiHeadAttention(num_heads=4, implementation="xla").apply(
        params, x, is_causal=True, bias=ops.alibi_bias(4, T))
    np.testing.assert_allclose(out, reference, atol=1e-5)


# ------------------------------------------------------------------------ sowing weights


def test_mutable_intermediates_without_sow_weights_sow_nothing_and_keep_the_kernel(spy):
    ids = tokens(5, (B, T))
    model = nn.DecoderOnlyLM(lm_config(attention_implementation="chunked"))
    params = model.init(jax.random.key(0), ids)
    spy.clear()
    _, state = model.apply(params, ids, mutable=["intermediates"])
    assert not jax.tree.leaves(state)
    assert len(spy) == 1
    assert all(c["implementation"] == "chunked" and not c["return_weights"] for c in spy)


def _reference_weights(params, x, **kwargs):
    """xla weights from the module's own projections."""
    p = params["params"]
    q = jnp.einsum("btf,fhd->bthd", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = jnp.einsum("btf,fhd->bthd", x, p["key"]["kernel"]) + p["key"]["bias"]
    return ops.dot_product_attention_weights(q, k, **kwargs)


@pytest.mark.parametrize("how", ["attribute", "call", "context"])
def test_sow_weights_sows_the_xla_weights(how):
    x = normal(3, (B, T, F))
    module = nn.MultiHeadAttention(num_heads=H, implementation="chunked",
                                   sow_weights=how == "attribute")
    params = module.init(jax.random.key(0), x)
    kwargs = {"sow_weights": True} if how == "call" else {}
    if how == "context":
        with nn.sow_attention_weights():
            out, state = module.apply(params, x, is_causal=True, mutable=["intermediates"])
    else:
        out, state = module.apply(params, x, is_causal=True, mutable=["intermediates"],
                                  **kwargs)
    (weights,) = state["intermediates"]["attention_weights"]
    assert weights.shape == (B, H, T, T)
    np.testing.assert_allclose(weights, _reference_weights(params, x, is_causal=True),
                               atol=1e-6)
    np.testing.assert_allclose(out, module.apply(params, x, is_causal=True), atol=1e-5)


def test_config_sow_weights_and_capture_attention_give_the_same_maps():
    ids = tokens(6, (B, T))
    cfg = lm_config(local_window_size=WINDOW)
    params = nn.DecoderOnlyLM(cfg).init(jax.random.key(0), ids)
    _, state = nn.DecoderOnlyLM(cfg.replace(sow_weights=True)).apply(
        params, ids, segment_ids=SEGMENTS, mutable=["intermediates"])
    sown = state["intermediates"]["decoder"]["layer_0"]["self_attention"]["attention_weights"][0]
    _, maps = jax.jit(lambda p, i: analysis.capture_attention(
        nn.DecoderOnlyLM(cfg), p, i, segment_ids=SEGMENTS))(params, ids)
    np.testing.assert_allclose(maps["decoder/layer_0/self_attention"], sown, atol=1e-6)
    assert sown.shape == (B, H, T, T)
    assert np.all(np.where(dense_mask(), 0.0, np.asarray(sown)) == 0.0)  # nothing outside


# ----------------------------------------------------------------------- flax conventions


def test_inputs_k_and_inputs_v_equal_flax_with_the_same_params():
    q, k, v = normal(4, (B, 5, F)), normal(5, (B, 7, 24)), normal(6, (B, 7, 24))
    mask = jnp.asarray(np.random.default_rng(7).random((B, 1, 5, 7)) < 0.7).at[..., 0].set(True)
    flax_mha = flax_nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=32,
                                                    normalize_qk=True)
    flax_params = flax_mha.init(jax.random.key(0), q, k, v, mask=mask)
    ours = nn.MultiHeadAttention(num_heads=H, qkv_features=32, normalize_qk=True)
    assert (jax.tree.structure(ours.init(jax.random.key(1), q, k, v))
            == jax.tree.structure(flax_params))
    np.testing.assert_allclose(ours.apply(flax_params, q, k, v, mask=mask),
                               flax_mha.apply(flax_params, q, k, v, mask=mask), atol=1e-5)
    # inputs_v defaults to inputs_k, as in flax
    np.testing.assert_allclose(ours.apply(flax_params, q, k, mask=mask),
                               flax_mha.apply(flax_params, q, k, mask=mask), atol=1e-5)


def test_inputs_kv_is_deprecated_and_cannot_be_combined_with_inputs_k():
    q, kv = normal(7, (B, 5, F)), normal(8, (B, 7, F))
    module = nn.MultiHeadAttention(num_heads=H)
    params = module.init(jax.random.key(0), q, kv)
    with pytest.warns(DeprecationWarning, match="inputs_kv"):
        old = module.apply(params, q, inputs_kv=kv)
    np.testing.assert_array_equal(old, module.apply(params, q, kv, kv))
    with pytest.raises(ValueError, match="`inputs_kv` cannot be combined with `inputs_k`"):
        module.apply(params, q, kv, inputs_kv=kv)
    with pytest.raises(ValueError, match="`inputs_k` cannot be None when `inputs_v`"):
        module.apply(params, q, inputs_v=kv)


def test_dropout_without_deterministic_raises_a_clear_error():
    x = normal(9, (B, 5, F))
    module = nn.MultiHeadAttention(num_heads=H, dropout_rate=0.5)
    params = module.init(jax.random.key(0), x, deterministic=True)
    with pytest.raises(ValueError, match=r"dropout_rate=0.5 > 0 needs `deterministic`"):
        module.apply(params, x)
    with pytest.raises(ValueError, match="both as the module attribute"):
        module.clone(deterministic=True).apply(params, x, deterministic=True)
    # merged as flax's nn.merge_param: the attribute alone, or the call argument alone
    np.testing.assert_array_equal(module.clone(deterministic=True).apply(params, x),
                                  module.apply(params, x, deterministic=True))
    dropped = module.clone(deterministic=False).apply(params, x, dropout_rng=jax.random.key(1))
    assert not np.allclose(dropped, module.apply(params, x, deterministic=True))
    # without dropout `deterministic` is not needed
    nn.MultiHeadAttention(num_heads=H).apply(params, x)


def test_qk_norm_scales_have_the_param_dtype():
    x = normal(10, (B, 5, F))
    module = nn.MultiHeadAttention(num_heads=H, normalize_qk=True, param_dtype=jnp.bfloat16)
    params = module.init(jax.random.key(0), x)["params"]
    assert params["query_ln"]["scale"].dtype == jnp.bfloat16
    assert params["key_ln"]["scale"].dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))


def test_config_checks_window_and_implementation():
    with pytest.raises(ValueError, match="`local_window_size` must be None, an int"):
        lm_config(local_window_size=(3, -1))
    with pytest.raises(ValueError, match="`attention_implementation` must be None or one of"):
        lm_config(attention_implementation="cuda")
    with pytest.raises(ValueError, match="`segment_ids` must be integer document ids"):
        nn.DecoderOnlyLM(lm_config()).init(jax.random.key(0), tokens(0, (B, T)),
                                           segment_ids=SEGMENTS[:, :5])


def test_packed_windowed_alibi_lm_runs_under_rank_promotion_raise():
    ids = tokens(11, (B, T))
    cfg = lm_config(position="alibi", local_window_size=WINDOW,
                    attention_implementation="chunked")
    with jax.numpy_rank_promotion("raise"):
        params = nn.DecoderOnlyLM(cfg).init(jax.random.key(0), ids)
        logits = nn.DecoderOnlyLM(cfg).apply(params, ids, segment_ids=SEGMENTS)
        positions = ops.segment_positions(SEGMENTS)
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(positions[0], [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2])
