"""Interpretability tools on inputs with a known answer: hand-set heads, identity
attention, linear score functions, small graphs whose max flow is known by hand, and rank
correlations against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from attnjax import analysis
from attnjax import nn as ann


def shifted(t: int, k: int) -> np.ndarray:
    """``[T, T]`` attention of a head that attends to ``i + k`` (rows without it: to 0)."""
    w = np.zeros((t, t))
    for i in range(t):
        w[i, i + k if 0 <= i + k < t else 0] = 1.0
    return w


# --------------------------------------------------------------------------- head scores


def test_hand_set_heads_get_their_scores():
    t = 6
    heads = np.stack([
        shifted(t, -1),  # previous token (row 0 -> key 0)
        np.full((t, t), 1.0 / t),  # uniform
        np.eye(t)[np.zeros(t, int)],  # everything on the first token
        np.eye(t),  # itself
    ])[None]  # [B=1, H=4, T, T]
    scores = analysis.head_scores(heads)
    # Previous-token head: 1.0 on rows 1..5, row 0 has no previous token.
    np.testing.assert_allclose(scores["previous_token"], [5 / 6, 5 / 36, 1 / 6, 0])
    valid = np.array([[False, True, True, True, True, True]])  # skip row 0
    np.testing.assert_allclose(analysis.head_scores(heads, valid=valid)["previous_token"][0], 1.0)
    np.testing.assert_allclose(scores["normalized_entropy"], [0, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(scores["first_token"], [2 / 6, 1 / 6, 1, 1 / 6])
    np.testing.assert_allclose(scores["offset_0"], [1 / 6, 1 / 6, 1 / 6, 1])
    np.testing.assert_allclose(scores["mean_distance"][[0, 3]], [5 / 6, 0])
    np.testing.assert_allclose(scores["mean_distance"][1], np.abs(np.subtract.outer(
        range(t), range(t))).mean())


def test_punctuation_score_and_layer_axis():
    w = np.zeros((2, 1, 1, 3, 3))  # [L=2, B=1, H=1, T, S]
    w[0, ..., 2] = 1.0  # layer 0: all weight on "."
    w[1, ..., 0] = 1.0  # layer 1: on "the"
    scores = analysis.head_scores(w, tokens=[["the", "cat", "."]])
    np.testing.assert_allclose(scores["punctuation"], [[1.0], [0.0]])
    with pytest.raises(ValueError, match="`tokens` must be B=1 lists of S=3"):
        analysis.head_scores(w, tokens=[["the", "cat"]])


# --------------------------------------------------------------------------- ablation


@pytest.fixture(scope="module")
def encoder():
    cfg = ann.TransformerConfig(vocab_size=13, model_dim=16, num_heads=4, mlp_dim=32,
                                num_layers=2, dropout_rate=0.0)
    model = ann.Encoder(cfg)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 13, size=(3, 7)), jnp.int32)
    variables = model.init(jax.random.key(0), tokens)
    return model, variables, tokens


def test_head_outputs_are_captured_per_module(encoder):
    model, variables, tokens = encoder
    out, heads = analysis.head_outputs(model, variables, tokens)
    assert sorted(heads) == ["layer_0/self_attention", "layer_1/self_attention"]
    assert heads["layer_0/self_attention"].shape == (3, 7, 4, 4)
    np.testing.assert_allclose(out, model.apply(variables, tokens), atol=0)


def test_zero_ablation_equals_zeroing_the_heads_output_weights(encoder):
    model, variables, tokens = encoder
    path, head = "layer_1/self_attention", 2
    ablated = analysis.ablate_heads(model, variables, tokens, heads={path: [head]})
    assert np.abs(ablated - model.apply(variables, tokens)).max() > 1e-3  # it matters
    # Known answer: out = sum_h o_h W_h + b, so zeroing W_head removes exactly that head.
    edited = jax.tree_util.tree_map(lambda x: x, variables)
    kernel = edited["params"]["layer_1"]["self_attention"]["out"]["kernel"]
    edited["params"]["layer_1"]["self_attention"]["out"]["kernel"] = kernel.at[head].set(0.0)
    np.testing.assert_allclose(ablated, model.apply(edited, tokens), atol=1e-6)


def test_mean_ablation_with_this_inputs_means_of_a_single_token_changes_nothing(encoder):
    model, variables, _ = encoder
    one = jnp.asarray([[5]], jnp.int32)  # B = T = 1: the mean of a head's output is itself
    means = analysis.mean_head_outputs(model, variables, one)
    heads = {"layer_0/self_attention": [0, 3], "layer_1/self_attention": [1]}
    out = analysis.ablate_heads(model, variables, one, heads=heads, mode="mean", means=means)
    np.testing.assert_allclose(out, model.apply(variables, one), atol=1e-6)


def test_ablation_rejects_unknown_paths_modes_and_heads(encoder):
    model, variables, tokens = encoder
    with pytest.raises(ValueError, match="no attention module at"):
        analysis.ablate_heads(model, variables, tokens, heads={"layer_9/self_attention": [0]})
    with pytest.raises(ValueError, match="`mode`"):
        analysis.ablate_heads(model, variables, tokens, heads={}, mode="noise")
    with pytest.raises(ValueError, match="out of range"):
        analysis.ablate_heads(model, variables, tokens, heads={"layer_0/self_attention": [4]})


def test_ablation_works_under_jit(encoder):
    model, variables, tokens = encoder
    heads = {"layer_0/self_attention": [1]}
    jitted = jax.jit(lambda v, x: analysis.ablate_heads(model, v, x, heads=heads))
    np.testing.assert_allclose(jitted(variables, tokens),
                               analysis.ablate_heads(model, variables, tokens, heads=heads),
                               atol=1e-6)


# --------------------------------------------------------------------------- rollout, flow


def test_rollout_and_flow_of_identity_attention_are_identity():
    eye = np.stack([np.eye(5)] * 3)
    np.testing.assert_allclose(analysis.attention_rollout(eye), np.eye(5), atol=1e-12)
    np.testing.assert_allclose(analysis.attention_flow(eye), np.eye(5), atol=1e-9)


def test_one_layer_rollout_and_flow_equal_the_residual_mixed_attention():
    rng = np.random.default_rng(0)
    w = rng.random((1, 2, 4, 4))  # [L=1, H=2, T, T]
    w /= w.sum(-1, keepdims=True)
    mixed = 0.5 * np.eye(4) + 0.5 * w.mean(1)[0]
    np.testing.assert_allclose(analysis.attention_rollout(w), mixed, atol=1e-12)
    np.testing.assert_allclose(analysis.attention_flow(w), mixed, atol=1e-9)


def test_flow_is_limited_by_the_narrowest_edge_where_rollout_multiplies():
    # Two layers, two tokens, no residual: token 1 sends 0.5 to token 0 in layer 1, token 0
    # keeps everything in layer 0. Rollout multiplies weights along paths; flow from output
    # token 1 to input token 0 is capped by the 0.5 edge on the only path through token 0,
    # plus the 0.5 through token 1 and then its full edge to token 0.
    layer0 = np.array([[1.0, 0.0], [1.0, 0.0]])  # both look at token 0
    layer1 = np.array([[1.0, 0.0], [0.5, 0.5]])
    w = np.stack([layer0, layer1])
    np.testing.assert_allclose(analysis.attention_rollout(w, residual=0.0), layer1 @ layer0)
    flow = analysis.attention_flow(w, residual=0.0)
    assert flow[1, 0] == pytest.approx(1.0) and flow[1, 1] == pytest.approx(0.0)
    # A bottleneck: with layer 0 sending only 0.25 of token 1 to token 0, the path through
    # token 1 can carry at most 0.25, while rollout still multiplies 0.5 * 0.25.
    layer0 = np.array([[1.0, 0.0], [0.25, 0.75]])
    flow = analysis.attention_flow(np.stack([layer0, layer1]), residual=0.0)
    assert flow[1, 0] == pytest.approx(0.5 + 0.25)
    rollout = analysis.attention_rollout(np.stack([layer0, layer1]), residual=0.0)
    assert rollout[1, 0] == pytest.approx(0.5 * 1.0 + 0.5 * 0.25)


def test_rollout_rejects_cross_attention_shapes():
    with pytest.raises(ValueError, match=r"\[L, T, T\]"):
        analysis.attention_rollout(np.ones((2, 3, 4)))


# --------------------------------------------------------------------------- attributions


def test_gradient_x_input_and_leave_one_out_of_a_linear_score_are_its_terms():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 3)))
    w = jnp.asarray(rng.standard_normal((5, 3)))
    score = lambda e: jnp.sum(e * w, axis=(1, 2))  # noqa: E731
    terms = jnp.sum(x * w, axis=-1)  # [B, T]: each token's exact contribution
    np.testing.assert_allclose(analysis.gradient_x_input(score, x), terms, atol=1e-6)
    np.testing.assert_allclose(analysis.leave_one_out(score, x), terms, atol=1e-6)


def test_attributions_of_a_real_encoder_through_the_embedding_hook(encoder):
    model, variables, tokens = encoder
    output = lambda states: states[:, 0, 0]  # noqa: E731 - one coordinate of token 0
    x, score = analysis.embedding_function(model, variables, tokens, output=output)
    assert x.shape == (3, 7, 16)
    np.testing.assert_allclose(score(x), output(model.apply(variables, tokens)), atol=1e-6)
    gxi = analysis.gradient_x_input(score, x)
    loo = analysis.leave_one_out(score, x)
    assert gxi.shape == loo.shape == (3, 7)
    assert np.all(np.isfinite(gxi)) and np.abs(loo).max() > 0


def test_rank_correlations_match_scipy():
    rng = np.random.default_rng(1)
    for _ in range(5):
        a = rng.integers(0, 4, size=9).astype(float)  # with ties
        b = a + rng.normal(size=9)
        assert analysis.kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
        assert analysis.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert analysis.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


# --------------------------------------------------------------------------- induction


def test_repeated_sequences_are_bos_x_x_and_step_pure():
    from attnjax.data import induction

    batch = induction.batch_at(7, seed=0, batch_size=4, half_length=5, vocab_size=10)["tokens"]
    assert batch.shape == (4, 11) and (batch[:, 0] == induction.BOS_ID).all()
    np.testing.assert_array_equal(batch[:, 1:6], batch[:, 6:])
    assert batch[:, 1:].min() >= induction.FIRST_TOKEN_ID and batch.max() < 10
    again = induction.batch_at(7, seed=0, batch_size=4, half_length=5, vocab_size=10)["tokens"]
    np.testing.assert_array_equal(batch, again)


def test_hand_set_induction_and_previous_token_heads_score_one():
    from experiments import induction as experiment_induction

    n = 5
    t = 2 * n  # inputs [BOS, x_1..x_n, x_1..x_(n-1)]
    induction_head = np.zeros((t, t))
    induction_head[np.arange(t), np.arange(t)] = 1.0
    for q in range(n + 1, t):  # second-half x_j attends to the token after the first x_j
        induction_head[q] = 0.0
        induction_head[q, q - n + 1] = 1.0
    weights = np.stack([shifted(t, -1), induction_head])[None]  # [B=1, H=2, T, T]
    scores = experiment_induction.head_pattern_scores(weights[None], n)  # [L=1, ...]
    np.testing.assert_allclose(scores["prefix_matching"][0], [0.0, 1.0])
    np.testing.assert_allclose(scores["previous_token"][0], [1.0, 0.0], atol=1e-12)


def test_replacing_attention_with_its_own_weights_changes_nothing_and_uniform_averages(encoder):
    model, variables, tokens = encoder
    out, maps = analysis.capture_attention(model, variables, tokens)
    same = analysis.with_attention_weights(model, variables, tokens, weights=maps)
    np.testing.assert_allclose(same, out, atol=1e-5)
    path = "layer_1/self_attention"
    uniform = jnp.full(maps[path].shape, 1.0 / tokens.shape[1])
    got = analysis.with_attention_weights(model, variables, tokens, weights={path: uniform})
    # Known answer: uniform weights make every head's output the mean of its values, which
    # is what mean-pooling the captured values and projecting gives.
    def mean_values(next_fun, args, kwargs, context):
        if context.module.name == "out" and context.module.parent.path[0] == "layer_1":
            return next_fun(captured_mean, *args[1:], **kwargs)
        return next_fun(*args, **kwargs)

    values = {}

    def grab(next_fun, args, kwargs, context):
        result = next_fun(*args, **kwargs)
        if context.module.name == "value" and context.module.parent.path[0] == "layer_1":
            values["v"] = result
        return result

    import flax.linen as flax_nn

    with flax_nn.intercept_methods(grab):
        model.apply(variables, tokens)
    captured_mean = jnp.broadcast_to(values["v"].mean(axis=1, keepdims=True), values["v"].shape)
    with flax_nn.intercept_methods(mean_values):
        want = model.apply(variables, tokens)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"must be \[3, 4, 7, 7\]"):
        analysis.with_attention_weights(model, variables, tokens, weights={path: uniform[0]})


# --------------------------------------------------------------------------- explanation


def test_jensen_shannon_divergence_known_values():
    from experiments import explanation

    p = jnp.asarray([[0.5, 0.5, 0.0, 0.0]])
    q = jnp.asarray([[0.0, 0.0, 0.5, 0.5]])
    np.testing.assert_allclose(explanation.jsd(p, p), [0.0], atol=1e-6)
    np.testing.assert_allclose(explanation.jsd(p, q), [np.log(2)], atol=1e-6)  # disjoint


def test_sentiment_task_evidence_decides_the_label():
    from attnjax.data.sentiment import NOT_ID, SentimentTask

    task = SentimentTask(length=8)
    batch = task.sample(np.random.default_rng(0), 200)
    rows = np.arange(200)
    word = batch["tokens"][rows, batch["polar"]]
    positive = np.isin(word, task.positive)
    negated = batch["negation"] >= 0
    assert (batch["tokens"][rows[negated], batch["negation"][negated]] == NOT_ID).all()
    np.testing.assert_array_equal(batch["label"], positive ^ negated)


def test_head_scores_with_a_layer_axis_and_padding_rows():
    w = np.zeros((2, 3, 1, 4, 4))  # [L, B, H, T, S]
    w[..., np.arange(4), np.arange(4)] = 1.0  # attend to self
    w[:, :, :, 3] = 0.0
    w[:, :, :, 3, 0] = 1.0  # the last row (padding below) looks at the first token
    valid = np.array([[True, True, True, False]] * 3)
    scores = analysis.head_scores(w, valid=valid)
    np.testing.assert_allclose(scores["offset_0"], np.ones((2, 1)))
    np.testing.assert_allclose(scores["first_token"], np.full((2, 1), 1 / 3))


def test_normalized_entropy_counts_only_the_valid_keys():
    w = np.zeros((1, 1, 4, 4))  # [B, H, T, S]: uniform over the 3 real tokens
    w[..., :3] = 1.0 / 3
    valid = np.array([[True, True, True, False]])
    np.testing.assert_allclose(analysis.head_scores(w, valid=valid)["normalized_entropy"], [1.0])
    np.testing.assert_allclose(analysis.head_scores(w)["normalized_entropy"],
                               [np.log(3) / np.log(4)])


# --------------------------------------------------------------------------- heads
