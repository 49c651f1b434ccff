"""The lm_induction experiment: its data, head scores, head sets, the traced-mask ablation
(against ``analysis.ablate_heads``), the rule on synthetic numbers, and the smoke run of
SmolLM2-135M-Instruct where it is installed."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax import analysis, experiment, pretrained
from attnjax import nn as ann
from attnjax.data import induction
from experiments import _llm
from experiments import lm_induction as exp
from tests.helpers import tour_run

needs_smollm2 = pytest.mark.skipif(
    not pretrained.smollm2_available(),
    reason=f"SmolLM2-135M-Instruct not installed ({_llm.INSTALL})")


# --------------------------------------------------------------------------- data


def test_sequences_are_prefix_then_the_same_distinct_tokens_twice():
    pool = np.arange(100, 140)
    tokens = exp.repeated_sequences(np.random.default_rng(0), 6, 12, pool, prefix_id=7)
    assert tokens.shape == (6, 25) and tokens.dtype == np.int32
    assert (tokens[:, 0] == 7).all()
    np.testing.assert_array_equal(tokens[:, 1:13], tokens[:, 13:])
    assert all(len(set(row[1:13].tolist())) == 12 for row in tokens)
    assert np.isin(tokens[:, 1:], pool).all()
    again = exp.repeated_sequences(np.random.default_rng(0), 6, 12, pool, prefix_id=7)
    np.testing.assert_array_equal(tokens, again)
    with pytest.raises(ValueError, match="cannot fill"):
        exp.repeated_sequences(np.random.default_rng(0), 1, 50, pool, prefix_id=7)


def test_ordinary_token_ids_keep_a_space_then_letters_only():
    pieces = ["Ġcat", "cat", "Ġ12", "Ġa", "ĠNew", "Ġdon't", "<|im_end|>", "Ġcafé", "Ġdog"]
    np.testing.assert_array_equal(exp.ordinary_token_ids(pieces, first_id=10), [10, 14, 18])


def test_loss_positions_are_the_toy_datas_first_and_second_copy_targets():
    n = 7
    where = exp.loss_positions(n)
    masks = induction.copy_targets(np.array([n]), n)
    np.testing.assert_array_equal(where["first"], np.nonzero(masks["first"][0])[0])
    np.testing.assert_array_equal(where["repeat"], np.nonzero(masks["second"][0])[0])


def test_split_needs_two_sequences_per_half():
    assert exp.split_sizes(9) == (4, 5)
    with pytest.raises(ValueError, match=">= 4"):
        exp.split_sizes(3)


# --------------------------------------------------------------------------- scores


def _hand_made_maps(n: int) -> np.ndarray:
    """``[L=1, B=1, H=3, T, T]``, T = 1 + 2n: head 0 is a perfect induction head (each
    repeated token on the token after its first occurrence, earlier rows on the previous
    token), head 1 a perfect previous-token head, head 2 uniform causal attention."""
    t = 1 + 2 * n
    w = np.zeros((1, 1, 3, t, t))
    w[0, 0, :2, 0, 0] = 1.0
    for q in range(1, t):
        w[0, 0, 0, q, q - n + 1 if q >= n + 1 else q - 1] = 1.0
        w[0, 0, 1, q, q - 1] = 1.0
        w[0, 0, 2, q, : q + 1] = 1.0 / (q + 1)
    w[0, 0, 2, 0, 0] = 1.0
    return w


def test_pattern_scores_on_hand_made_maps():
    n = 4
    scores = exp.pattern_scores(_hand_made_maps(n), n)
    prefix, previous = scores["prefix_matching"][0, 0], scores["previous_token"][0, 0]
    repeat_rows = np.arange(n + 1, 2 * n + 1)
    all_rows = np.arange(1, 2 * n + 1)
    np.testing.assert_allclose(prefix, [1.0, 0.0, np.mean(1.0 / (repeat_rows + 1))])
    # The induction head looks one back on the first copy's n rows, not on the repeat's.
    np.testing.assert_allclose(previous, [n / (2 * n), 1.0, np.mean(1.0 / (all_rows + 1))])


def test_pattern_scores_check_the_length():
    with pytest.raises(ValueError, match="T = 1 \\+ 2 N = 9"):
        exp.pattern_scores(np.zeros((1, 1, 2, 8, 8)), 4)


# --------------------------------------------------------------------------- head sets


def test_top_heads_are_best_first():
    scores = np.array([[0.1, 0.9, 0.2], [0.8, 0.0, 0.95]])
    assert exp.top_heads(scores, 3) == [(1, 2), (0, 1), (1, 0)]


def test_layer_matched_control_avoids_the_chosen_heads_and_keeps_their_layers():
    chosen = [(1, 0), (1, 2), (3, 1)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn = exp.layer_matched_heads(rng, chosen, num_layers=4, num_heads=4)
        assert not set(drawn) & set(chosen) and len(set(drawn)) == 3
        assert sorted(a for a, _ in drawn) == [1, 1, 3]


def test_layer_matched_control_fills_a_full_layer_from_the_others():
    chosen = [(0, 0), (0, 1), (2, 0)]  # layer 0 has no unchosen head left
    drawn = exp.layer_matched_heads(np.random.default_rng(0), chosen, num_layers=3,
                                    num_heads=2)
    assert len(drawn) == 3 and not set(drawn) & set(chosen)
    assert sum(a == 2 for a, _ in drawn) >= 1 and all(a != 0 for a, _ in drawn)


def test_keep_mask_is_false_exactly_at_the_heads():
    keep = exp.keep_mask([(0, 1), (2, 0)], 3, 2)
    assert keep.tolist() == [[True, False], [True, True], [False, True]]


# --------------------------------------------------------------------------- ablation


@pytest.fixture(scope="module")
def tiny_lm():
    config = pretrained.llama.llama_config(
        vocab_size=40, model_dim=32, num_heads=4, num_kv_heads=2, num_layers=2, mlp_dim=48,
        max_len=32, rope_base=10000.0, norm_epsilon=1e-5)
    module = ann.DecoderOnlyLM(config)
    tokens = jax.random.randint(jax.random.key(1), (3, 9), 0, 40)
    params = module.init(jax.random.key(0), tokens)["params"]
    return config, module, params, tokens


def _losses(logits, tokens):
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])


def test_masked_forward_matches_ablate_heads_zero_and_mean(tiny_lm):
    config, module, params, tokens = tiny_lm
    forward = jax.jit(exp.masked_forward(module, config.num_layers))
    heads = {"decoder/layer_0/self_attention": [1], "decoder/layer_1/self_attention": [0, 3]}
    keep = jnp.asarray(exp.keep_mask([(0, 1), (1, 0), (1, 3)], 2, 4))
    zeros = jnp.zeros((2, 4, 8))
    variables = {"params": params}

    losses, attention, head_sums = forward(params, tokens, jnp.ones((2, 4), bool), zeros)
    np.testing.assert_allclose(losses, _losses(module.apply(variables, tokens), tokens),
                               atol=1e-5)
    _, maps = analysis.capture_attention(module, variables, tokens)
    np.testing.assert_allclose(attention, analysis.stack_layers(maps, "self_attention"),
                               atol=1e-6)
    _, outputs = analysis.head_outputs(module, variables, tokens)
    for layer in range(2):
        np.testing.assert_allclose(
            head_sums[:, layer], outputs[f"decoder/layer_{layer}/self_attention"].sum(1),
            atol=1e-5)

    zeroed = forward(params, tokens, keep, zeros)[0]
    want = _losses(analysis.ablate_heads(module, variables, tokens, heads=heads), tokens)
    np.testing.assert_allclose(zeroed, want, atol=1e-5)
    assert np.abs(np.asarray(zeroed) - np.asarray(losses)).max() > 1e-3  # it did something

    means = analysis.mean_head_outputs(module, variables, tokens)
    fill = jnp.stack([means[f"decoder/layer_{i}/self_attention"] for i in range(2)])
    meaned = forward(params, tokens, keep, fill)[0]
    want = _losses(analysis.ablate_heads(module, variables, tokens, heads=heads, mode="mean",
                                         means=means), tokens)
    np.testing.assert_allclose(meaned, want, atol=1e-5)


def test_run_batches_pads_the_last_batch_and_drops_the_padding(tiny_lm):
    config, module, params, tokens = tiny_lm
    forward = jax.jit(exp.masked_forward(module, config.num_layers))
    keep, fill = jnp.ones((2, 4), bool), jnp.zeros((2, 4, 8))
    whole = forward(params, tokens, keep, fill)
    losses, attention, head_sums = exp.run_batches(forward, params, np.asarray(tokens), 2,
                                                   keep, fill)
    assert losses.shape == (3, 8) and attention.shape[:2] == (2, 3) and len(head_sums) == 3
    np.testing.assert_allclose(losses, whole[0], atol=1e-5)
    np.testing.assert_allclose(attention, whole[1], atol=1e-6)


# --------------------------------------------------------------------------- the rule


def _numbers(icl=(3.0, 2.0, 4.0), prefix=(0.9, 0.8, 0.95), minus=(2.0, 1.5, 2.5),
             fraction=(0.7, 0.6, 0.8)) -> dict:
    def record(values):
        mean, lo, hi = values
        return {"mean": mean, "ci95": [lo, hi], "n": 10}

    metrics = {"icl_score": record(icl), "top_head_prefix_matching": record(prefix),
               "rise_induction_minus_control": record(minus),
               "removed_fraction": record(fraction)}
    for name in ("first_loss", "repeat_loss", "rise_induction", "rise_control"):
        metrics[name] = record((1.0, 0.5, 1.5))
    for mode in ("mean", "zero"):
        for name in ("rise_induction", "rise_control", "icl_score_without_induction"):
            metrics[f"{name}_{mode}"] = record((1.0, 0.5, 1.5))
    return {"metrics": metrics, "sequences": 20, "heldout": 10, "half_length": 31,
            "num_layers": 30, "num_heads": 9, "heads_above_threshold_heldout": 5,
            "induction_heads": [{"layer": 17, "head": 3}, {"layer": 18, "head": 6}],
            "previous_token_heads": [{"layer": 2, "head": 1}]}


@pytest.fixture(scope="module")
def config():
    return experiment.load_config("configs/lm_induction.py:smoke")


def test_verdict_holds_when_every_interval_clears_its_bar(config):
    out = exp.verdict(_numbers(), config)
    assert out["verdict"].startswith("claim holds")
    assert "layer 17 head 3" in out["measured"]


def test_verdict_does_not_hold_when_no_part_does(config):
    out = exp.verdict(_numbers(icl=(0.3, 0.1, 0.5), prefix=(0.2, 0.1, 0.3),
                               minus=(0.1, -0.2, 0.4), fraction=(0.1, 0.0, 0.2)), config)
    assert out["verdict"].startswith("claim does not hold here")


def test_verdict_is_mixed_when_heads_exist_but_ablation_removes_little(config):
    out = exp.verdict(_numbers(fraction=(0.45, 0.4, 0.5)), config)
    assert out["verdict"].startswith("mixed")
    # A lower end exactly at the bar is no evidence.
    assert exp.parts(_numbers(minus=(0.5, 0.0, 1.0)), config)[
        "targeted_beats_random"].startswith("claim does not hold")


def test_configs_load_and_a_bad_variant_is_named():
    for variant in ("full", "tour", "smoke"):
        c = experiment.load_config(f"configs/lm_induction.py:{variant}")
        assert c.model_path == "" and c.num_sequences >= 4 and c.ablation_modes[0] == "mean"
    with pytest.raises(ValueError, match="unknown variant"):
        experiment.load_config("configs/lm_induction.py:huge")


# --------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    if not pretrained.smollm2_available():
        pytest.skip(f"SmolLM2-135M-Instruct not installed ({_llm.INSTALL})")
    return tour_run(tour_smoke, exp.NAME)


@needs_smollm2
def test_smoke_results_keep_the_contract_for_a_pretrained_model(smoke):
    config, run_dir, results = smoke
    assert results["seeds"] == [] and results["claim"] and results["published"]
    assert "{" not in results["rule"] and results["rule"] == exp.rule(config)
    assert results["headline"] == exp.HEADLINE
    for key in results["headline"]:
        metric = results["metrics"][key]
        lo, hi = metric["ci95"]
        assert lo <= metric["mean"] <= hi and metric["n"] >= 2
    assert len(results["figures"]) == 3
    for figure in results["figures"]:
        assert (run_dir.path / figure).read_bytes()[:4] == b"\x89PNG"
    records = run_dir.records()
    assert len(records) == config.num_sequences
    assert sum(r["split"] == "heldout" for r in records) == results["heldout"]


@needs_smollm2
def test_smoke_verdict_recomputes_from_the_stored_numbers(smoke):
    config, _, results = smoke
    again = exp.verdict(results, config)
    assert again["verdict"] == results["verdict"] and again["measured"] == results["measured"]
    low = {**results, "metrics": {**results["metrics"], "icl_score": {
        **results["metrics"]["icl_score"], "mean": 0.0, "ci95": [0.0, 0.0]}}}
    assert not exp.verdict(low, config)["verdict"].startswith("claim holds")


@needs_smollm2
def test_smoke_heads_and_controls_have_the_models_shape(smoke):
    config, _, results = smoke
    assert np.array(results["prefix_matching_heldout"]).shape == (30, 9)
    assert np.array(results["previous_token_heldout"]).shape == (30, 9)
    chosen = [(h["layer"], h["head"]) for h in results["induction_heads"]]
    assert len(chosen) == config.num_ablated
    assert len(results["control_heads"]) == config.control_draws
    for draw in results["control_heads"]:
        draw = [tuple(h) for h in draw]
        assert not set(draw) & set(chosen)
        assert sorted(a for a, _ in draw) == sorted(a for a, _ in chosen)
    n = config.half_length
    assert all(len(v) == 2 * n for v in results["per_position"].values())
    assert len(results["per_sequence"]["rise_induction_mean"]) == results["heldout"]
    # The model learns in context on a repeat: a sanity check, not the rule.
    assert results["metrics"]["repeat_loss"]["mean"] < results["metrics"]["first_loss"]["mean"]


def test_removed_fraction_is_a_ratio_of_means_with_an_interval():
    m = exp.removed_fraction(np.array([2.0, 4.0, 6.0]), np.array([1.0, 1.0, 1.0]))
    assert m["mean"] == pytest.approx(1 - 3 / 12) and m["n"] == 3
    assert m["ci95"][0] <= m["mean"] <= m["ci95"][1]
    # Damage that raises both copies' losses leaves the score, hence the fraction, alone.
    assert exp.removed_fraction(np.array([2.0, 4.0]), np.array([2.0, 4.0]))["mean"] == 0.0
