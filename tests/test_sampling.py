"""Sampling from a DecoderOnlyLM: ``sample_logits`` filters and ``generate`` over the KV cache."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax.nn import DecoderOnlyLM, TransformerConfig
from attnjax.train import generate, prefill, sample_logits, sampling

# pad_id=-1: no token is padding, so the full (non-cached) forward used as the reference masks
# nothing but the future, even when the model generates token 0. Untied output weights make
# the greedy continuations of a random model varied (tied ones mostly repeat the last token).
TINY = dict(
    vocab_size=50, model_dim=32, num_heads=2, num_kv_heads=1, num_layers=2, mlp_dim=64,
    max_len=64, dropout_rate=0.0, pad_id=-1, tie_embeddings=False,
)
PROMPTS = [[3, 7, 11, 2, 9], [41, 5, 0, 18, 26]]  # length 5: not a multiple of pad_multiple
NEW_TOKENS = 12


@functools.cache
def _model(position: str):
    config = TransformerConfig(position=position, **TINY)
    params = jax.jit(DecoderOnlyLM(config).init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    return config, params["params"]


@functools.cache
def _full_forward_greedy(position: str):
    """Greedy decoding that recomputes the whole non-cached forward at every step.

    The sequence so far sits in a fixed ``[B, max_len]`` buffer (one compilation, not one per
    length); the model is causal, so the unwritten tail cannot change the logits at the last
    written position.
    """
    config, params = _model(position)
    model = DecoderOnlyLM(config)

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def run(prompts, prompt_len, new_tokens):
        buffer = jnp.zeros((prompts.shape[0], config.max_len), jnp.int32)
        buffer = buffer.at[:, :prompt_len].set(prompts)

        def step(t, buffer):
            logits = model.apply({"params": params}, buffer)[:, prompt_len + t - 1]
            return buffer.at[:, prompt_len + t].set(jnp.argmax(logits, -1).astype(jnp.int32))

        buffer = jax.lax.fori_loop(0, new_tokens, step, buffer)
        return buffer[:, prompt_len : prompt_len + new_tokens]

    return lambda prompts, new_tokens: np.asarray(
        run(jnp.asarray(prompts, jnp.int32), len(prompts[0]), new_tokens)
    ).tolist()


@pytest.mark.parametrize("position", ["rope", "sinusoidal"])
def test_greedy_generate_with_kv_cache_equals_full_forward_recomputation(position):
    config, params = _model(position)
    expected = _full_forward_greedy(position)(PROMPTS, NEW_TOKENS)
    assert generate(config, params, PROMPTS, NEW_TOKENS) == expected
    assert len(set(expected[0])) > 2  # a continuation that exercises the cache, not a repeat


@pytest.mark.parametrize("position", ["rope", "sinusoidal"])
def test_greedy_generate_with_prompt_longer_than_pad_multiple(position):
    config, params = _model(position)
    prompts = [[(7 * i + 3) % 50 for i in range(19)], [(5 * i + 1) % 50 for i in range(19)]]
    # Padded to 32 for the prefill; the cache (19 + 12 -> 32) is the length-5 test's, so the
    # decode loop compiled there is reused.
    expected = _full_forward_greedy(position)(prompts, NEW_TOKENS)
    assert generate(config, params, prompts, NEW_TOKENS) == expected


@pytest.mark.parametrize("position", ["rope", "sinusoidal"])
def test_padded_prefill_logits_equal_the_unpadded_forward(position):
    config, params = _model(position)
    tokens = jnp.asarray(PROMPTS, jnp.int32)
    unpadded = jax.jit(DecoderOnlyLM(config).apply)({"params": params}, tokens)[:, -1]
    padded, cache = prefill(config, params, tokens, cache_len=32, pad_multiple=16)
    no_pad, _ = prefill(config, params, tokens, cache_len=32, pad_multiple=1)
    np.testing.assert_allclose(padded, unpadded, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(padded, no_pad, atol=1e-5, rtol=1e-5)
    counters = [
        int(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(cache)
        if path[-1].key in ("cache_index", "position_index")
    ]
    assert counters and all(c == len(PROMPTS[0]) for c in counters)


SAMPLED = dict(temperature=1.0, top_k=20, top_p=0.95)


def test_sampling_is_deterministic_given_the_seed_and_differs_across_seeds():
    config, params = _model("rope")
    sample = functools.partial(generate, config, params, PROMPTS[0], 20, **SAMPLED)
    first = sample(seed=0)
    assert isinstance(first, list) and all(isinstance(t, int) for t in first)  # one prompt
    assert len(first) == 20 and sample(seed=0) == first
    # 20 draws at temperature 1 over 20 candidates; seeds 0 and 1 were checked to differ.
    assert sample(seed=1) != first


def test_second_call_with_the_same_shapes_does_not_recompile():
    config, params = _model("rope")
    generate(config, params, PROMPTS[0], 20, seed=0, **SAMPLED)
    hits = sampling._decode_fn.cache_info().hits
    decode_fn = sampling._decode_fn(sampling._decode_config(config), 20, 1.0, 20, 0.95, ())
    prefill_fn = sampling._prefill_fn(sampling._decode_config(config), 32)
    compiled = decode_fn._cache_size(), prefill_fn._cache_size()
    generate(config, params, PROMPTS[1], 20, seed=3, **SAMPLED)  # other ids and seed
    assert sampling._decode_fn.cache_info().hits == hits + 2  # (+1: the lookup above)
    assert (decode_fn._cache_size(), prefill_fn._cache_size()) == compiled == (1, compiled[1])


def test_generation_stops_after_the_first_stop_id_and_includes_it():
    config, params = _model("rope")
    full = _full_forward_greedy("rope")(PROMPTS, NEW_TOKENS)
    # A token the first greedy continuation reaches at step >= 1 and not before it.
    stop = next(t for i, t in enumerate(full[0]) if i >= 1 and t not in full[0][:i])
    cut = lambda row: row[: row.index(stop) + 1] if stop in row else row  # noqa: E731
    assert generate(config, params, PROMPTS, NEW_TOKENS, stop_ids=stop) == [cut(r) for r in full]
    assert cut(full[0])[-1] == stop and len(cut(full[0])) < NEW_TOKENS


def test_cache_overflow_raises_a_clear_error():
    config, params = _model("rope")
    prompt = list(range(1, 11))
    with pytest.raises(ValueError, match=r"prompt length 10 \+ `max_new_tokens`=60.*max_len=64"):
        generate(config, params, prompt, 60)
    with pytest.raises(ValueError, match="`cache_len`=16"):
        generate(config, params, prompt, 8, cache_len=16)


@pytest.mark.parametrize(
    "prompt, kwargs, error, name",
    [
        ([], {}, ValueError, "prompt_ids"),
        ([[]], {}, ValueError, "prompt_ids"),
        ([1, 2.5], {}, TypeError, "prompt_ids"),
        ([1, True], {}, TypeError, "prompt_ids"),
        ("abc", {}, TypeError, "prompt_ids"),
        ([[1, 2], [3]], {}, ValueError, "prompt_ids"),
        ([1, 50], {}, ValueError, "prompt_ids"),
        ([1, 2], {"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ([1, 2], {"max_new_tokens": 2.0}, TypeError, "max_new_tokens"),
        ([1, 2], {"temperature": -0.5}, ValueError, "temperature"),
        ([1, 2], {"top_k": 0}, ValueError, "top_k"),
        ([1, 2], {"top_p": 0.0}, ValueError, "top_p"),
        ([1, 2], {"top_p": 1.5}, ValueError, "top_p"),
        ([1, 2], {"pad_multiple": 0}, ValueError, "pad_multiple"),
        ([1, 2], {"stop_ids": [1.0]}, TypeError, "stop_ids"),
        ([1, 2], {"seed": "0"}, TypeError, "seed"),
    ],
)
def test_bad_generate_arguments_raise_naming_the_argument(prompt, kwargs, error, name):
    config, params = _model("rope")
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(error, match=f"`{name}`"):
        generate(config, params, prompt, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 2.0}, "top_p")],
)
def test_bad_sample_logits_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sample_logits(jnp.zeros((2, 5)), jax.random.key(0), **kwargs)


# A real DecoderOnlyLM (prefill and KV-cache decoding) under "raise": the model code under
# attnjax/ops and attnjax/nn broadcasts by explicit reshapes only (tests/test_strict_modes.py
# covers the other positions and models).
@pytest.mark.parametrize("position", ["rope", "sinusoidal"])
def test_greedy_generate_of_a_real_model_under_rank_promotion_raise(position):
    config, params = _model(position)
    with jax.numpy_rank_promotion("raise"):
        generate(config, params, PROMPTS, 3)


class _RankCleanLM(nn.Module):
    """A stand-in for DecoderOnlyLM with a decode-style cache counter and no rank promotion:
    logits of ``tanh(token embedding + position embedding)``."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens):
        cfg = self.config
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        positions = index.value + jnp.arange(tokens.shape[1])
        hidden = nn.Embed(cfg.vocab_size, cfg.model_dim)(tokens)
        hidden = hidden + nn.Embed(cfg.max_len, cfg.model_dim)(positions)[None]
        if not self.is_initializing():
            index.value = index.value + tokens.shape[1]
        return nn.Dense(cfg.vocab_size)(jnp.tanh(hidden))


def test_generate_itself_runs_under_rank_promotion_raise(monkeypatch):
    config = TransformerConfig(position="none", **TINY)
    model = _RankCleanLM(config)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
    # Each step's logits depend on the last token and its position only.
    step = jax.jit(lambda token, index: model.apply(
        {"params": params, "cache": {"cache_index": index}}, token, mutable=["cache"]
    )[0][0, -1])
    expected = []
    for prompt in PROMPTS:
        sequence = list(prompt)
        for _ in range(6):
            logits = step(jnp.asarray([sequence[-1:]]), jnp.array(len(sequence) - 1))
            sequence.append(int(jnp.argmax(logits)))
        expected.append(sequence[len(prompt):])
    monkeypatch.setattr(sampling, "DecoderOnlyLM", _RankCleanLM)
    sampling._prefill_fn.cache_clear()  # a new model class behind the same config
    sampling._decode_fn.cache_clear()
    try:
        with jax.numpy_rank_promotion("raise"):
            assert generate(config, params, PROMPTS, 6) == expected
            sampled = generate(config, params, PROMPTS, 6, stop_ids=[3], seed=1, **SAMPLED)
            assert all(len(row) <= 6 for row in sampled)
            draw = functools.partial(sample_logits, temperature=1.0, top_k=5, top_p=0.8)
            jax.jit(draw)(jnp.zeros((3, 50)), jax.random.key(2))
    finally:
        sampling._prefill_fn.cache_clear()
        sampling._decode_fn.cache_clear()


# sample_logits on known distributions.

LOGITS = jax.random.normal(jax.random.key(3), (8, 50)) * 3.0


def _draws(logits, num, **settings):
    """``[num, ...]`` samples of ``sample_logits(logits)``, one key each, via vmap."""
    keys = jax.random.split(jax.random.key(4), num)
    draw = jax.jit(jax.vmap(lambda key: sample_logits(logits, key, **settings)))
    return np.asarray(draw(keys))


def test_temperature_zero_is_argmax():
    np.testing.assert_array_equal(sample_logits(LOGITS, None), np.argmax(LOGITS, -1))
    assert sample_logits(LOGITS, None).dtype == jnp.int32


@pytest.mark.parametrize("temperature", [0.5, 10.0])
def test_top_k_one_is_argmax_at_any_temperature(temperature):
    draws = _draws(LOGITS, 64, temperature=temperature, top_k=1)
    assert (draws == np.argmax(LOGITS, -1)).all()


def test_tiny_top_p_is_argmax():
    draws = _draws(LOGITS, 64, temperature=1.0, top_p=1e-6)
    assert (draws == np.argmax(LOGITS, -1)).all()


def test_top_k_samples_only_the_k_largest():
    draws = _draws(LOGITS, 2000, temperature=2.0, top_k=3)  # [2000, 8]
    top3 = np.argsort(-np.asarray(LOGITS), -1)[:, :3]
    for row in range(LOGITS.shape[0]):
        assert set(draws[:, row]) == set(top3[row])  # all three, and nothing else


# Known probabilities, not in sorted order, so the filters cannot rely on token order.
PROBS = np.array([0.05, 0.3, 0.02, 0.5, 0.13])  # nucleus of 0.9: tokens 3, 1, 4 (0.93)


def test_top_p_samples_only_the_nucleus():
    draws = _draws(jnp.log(PROBS)[None], 4000, temperature=1.0, top_p=0.9)[:, 0]
    assert set(draws) == {1, 3, 4}
    nucleus = PROBS[[1, 3, 4]] / PROBS[[1, 3, 4]].sum()
    freqs = np.array([(draws == t).mean() for t in (1, 3, 4)])
    np.testing.assert_allclose(freqs, nucleus, atol=0.03)


def test_top_k_is_applied_before_top_p():
    # top_k=3 leaves (0.5, 0.3, 0.13)/0.93; the mass above token 4 is then 0.86 >= 0.85, so
    # top_p=0.85 drops it. On the unfiltered distribution (mass above 0.8) it would stay.
    draws = _draws(jnp.log(PROBS)[None], 2000, temperature=1.0, top_k=3, top_p=0.85)[:, 0]
    assert set(draws) == {1, 3}
    assert set(_draws(jnp.log(PROBS)[None], 2000, temperature=1.0, top_p=0.85)[:, 0]) == {1, 3, 4}


def test_temperature_one_frequencies_match_softmax():
    logits = jnp.array([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    draws = _draws(logits, 5000, temperature=1.0)[:, 0]
    freqs = np.bincount(draws, minlength=6) / draws.size
    # 5000 draws: the standard error of a frequency is at most 0.007, so 0.03 is > 4 sigma.
    np.testing.assert_allclose(freqs, jax.nn.softmax(logits[0]), atol=0.03)


def test_temperature_sharpens_and_flattens():
    logits = jnp.array([[2.0, 1.0, 0.0]])
    for temperature in (0.5, 2.0):
        draws = _draws(logits, 5000, temperature=temperature)[:, 0]
        freqs = np.bincount(draws, minlength=3) / draws.size
        np.testing.assert_allclose(freqs, jax.nn.softmax(logits[0] / temperature), atol=0.03)
