"""The explanation experiment: its interventions, the per-seed rule, and its smoke run."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import analysis, experiment
from attnjax.data.sentiment import SentimentTask
from experiments import explanation
from tests.helpers import tour_run

SMOKE = "configs/explanation.py:smoke"


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "explanation")


# --------------------------------------------------------------------------- interventions


def test_uniform_weights_spread_evenly_over_valid_tokens_only():
    tokens = jnp.array([[1, 5, 6, 0], [1, 5, 6, 7]])
    w = np.asarray(explanation.uniform_weights(tokens, num_heads=2))
    assert w.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(w[0, 1, 2], [1 / 3, 1 / 3, 1 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(w[1, 0, 0], [0.25] * 4, rtol=1e-6)


def test_permute_rows_keeps_each_row_a_permutation_of_itself():
    weights = jax.nn.softmax(jax.random.normal(jax.random.key(0), (3, 2, 4, 5)), -1)
    shuffled = np.asarray(explanation.permute_rows(jax.random.key(1), weights))
    np.testing.assert_allclose(np.sort(shuffled, -1), np.sort(np.asarray(weights), -1),
                               rtol=1e-6)
    assert not np.allclose(shuffled, weights)


def test_jsd_is_zero_for_equal_and_ln2_for_disjoint_distributions():
    p = jnp.array([0.5, 0.5, 0.0, 0.0])
    q = jnp.array([0.0, 0.0, 0.5, 0.5])
    assert float(explanation.jsd(p, p)) == pytest.approx(0.0, abs=1e-6)
    assert float(explanation.jsd(p, q)) == pytest.approx(math.log(2), rel=1e-5)


def test_uniform_attention_model_equals_the_model_with_every_map_set_uniform():
    config = experiment.load_config(SMOKE)
    task = SentimentTask(length=6)
    model = explanation.build(config, task)
    data = task.sample(np.random.default_rng(0), 3)
    params = model.init(jax.random.key(0), data["tokens"], data["position"])
    _, maps = analysis.capture_attention(model, params, data["tokens"], data["position"])
    paths = tuple(analysis.layer_paths(maps, "self_attention"))
    wrapped = explanation.UniformAttention(model, paths, config.model.num_heads)
    uniform = explanation.uniform_weights(jnp.asarray(data["tokens"]), config.model.num_heads)
    expected = analysis.with_attention_weights(model, params, data["tokens"], data["position"],
                                               weights={p: uniform for p in paths})
    np.testing.assert_allclose(wrapped.apply(params, data["tokens"], data["position"]),
                               expected, rtol=1e-6)
    # Uniform attention differs from the model's own (the intervention does something).
    assert not np.allclose(model.apply(params, data["tokens"], data["position"]), expected)


def test_distracting_nots_never_negate_and_keep_the_label_rule():
    from attnjax.data.sentiment import NOT_ID

    task = SentimentTask(length=8, distractor_rate=1.0)
    batch = task.sample(np.random.default_rng(0), 300)
    rows = np.arange(300)
    positive = np.isin(batch["tokens"][rows, batch["polar"]], task.positive)
    before = batch["tokens"][rows, batch["polar"] - 1] == NOT_ID
    np.testing.assert_array_equal(before, batch["negation"] >= 0)
    np.testing.assert_array_equal(batch["label"], positive ^ before)
    # Every sentence has a "not", so its presence alone says nothing about the label.
    assert ((batch["tokens"] == NOT_ID).sum(1) >= 1).all()


# --------------------------------------------------------------------------- the rule


def _numbers(taus, fractions, gaps, grad_loo=0.6):
    per = []
    for tau, fraction, gap in zip(taus, fractions, gaps, strict=True):
        layer = {"tau_attention_vs_leave_one_out": tau, "tau_attention_vs_gradient": tau,
                 "permutation_median_change": 0.0, "adversarial_large_jsd_fraction": fraction,
                 "uniform_accuracy": 0.5, "top_token_is_evidence": 0.5}
        per.append({"test_accuracy": 0.9, "uniform_trained_accuracy": 0.9 - gap,
                    "uniform_all_layers_accuracy": 0.5, "tau_gradient_vs_leave_one_out": grad_loo,
                    "layers": [layer, dict(layer)]})
    return {"seeds": list(range(len(per))), "paths": ["l0", "l1"], "per_seed": per}


def test_rule_holds_only_when_attention_disagrees_is_swappable_and_needed():
    config = experiment.load_config(SMOKE)
    judged = explanation.verdict(_numbers([0.1, 0.1], [0.9, 0.9], [0.3, 0.3]), config)
    assert judged["class"] == "claim holds"
    assert "2 of 2 seeds" in judged["verdict"]
    # The counterfactuals pass but a uniform-attention model does as well: vacuous, mixed.
    judged = explanation.verdict(_numbers([0.1, 0.1], [0.9, 0.9], [0.0, 0.0]), config)
    assert judged["class"] == "mixed"
    # Attention agrees with leave-one-out as well as the gradient does: does not hold.
    judged = explanation.verdict(_numbers([0.6, 0.6], [0.9, 0.9], [0.3, 0.3]), config)
    assert judged["class"] == "claim does not hold here"
    # No very different attention keeps the output.
    judged = explanation.verdict(_numbers([0.1, 0.1], [0.1, 0.1], [0.3, 0.3]), config)
    assert judged["class"] == "claim does not hold here"


# --------------------------------------------------------------------------- smoke run


@pytest.mark.slow  # trains the smoke variant (module fixture)
def test_smoke_results_follow_the_contract(smoke):
    config, run_dir, results = smoke
    assert results["seeds"] == list(config.seeds) and len(results["seeds"]) == 2
    assert results["rule"] == explanation.rule_text(config)
    assert results["verdict"].startswith(experiment.VERDICTS)
    assert "of 2 seeds" in results["verdict"]
    for name in results["headline"]:
        metric = results["metrics"][name]
        assert len(metric["per_seed"]) == 2
        assert metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1]
    assert {p["metric"] for p in results["published"]} and results["published_note"]
    for figure in results["figures"]:
        assert (run_dir.path / figure).is_file()


@pytest.mark.slow  # trains the smoke variant (module fixture)
def test_smoke_reports_every_layer_and_recomputes_its_verdict(smoke):
    config, run_dir, results = smoke
    stored = json.loads((run_dir.path / "results.json").read_text())
    assert explanation.verdict(stored["numbers"], config)["verdict"] == stored["verdict"]
    for record in stored["numbers"]["per_seed"]:
        assert len(record["layers"]) == config.model.num_layers
        for layer in record["layers"]:
            assert 0.0 <= layer["adversarial_large_jsd_fraction"] <= 1.0
            assert 0.0 <= layer["uniform_accuracy"] <= 1.0
    # Each seed draws its own sentences.
    task = SentimentTask(length=config.length, negation_rate=config.negation_rate,
                         distractor_rate=config.distractor_rate)
    data = explanation.seed_data(config, task, config.seeds)
    a, b = (data[s]["test"]["tokens"] for s in config.seeds)
    assert not np.array_equal(a, b)
