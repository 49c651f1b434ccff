"""The logit_lens experiment: its per-token lens statistics, settling layer, rank correlation
and sentence bootstrap on hand-made arrays, the lens against ``CausalLM.unembed`` on a small
random model, the rule on synthetic numbers, and the smoke run of SmolLM2-135M-Instruct
where it is installed."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import experiment, pretrained
from attnjax import nn as ann
from experiments import _llm
from experiments import logit_lens as exp
from tests.helpers import tour_run

needs_smollm2 = pytest.mark.skipif(
    not pretrained.smollm2_available(),
    reason=f"SmolLM2-135M-Instruct not installed ({_llm.INSTALL})")


# --------------------------------------------------------------------------- statistics


def test_lens_statistics_by_hand_on_a_four_token_vocabulary():
    final = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]]))
    lens = np.log(np.array([[0.1, 0.6, 0.2, 0.1], [0.05, 0.05, 0.1, 0.8]]))
    out = jax.device_get(exp.lens_statistics(jnp.asarray(lens), jnp.asarray(final),
                                             jnp.array([1, 0])))
    np.testing.assert_array_equal(out["top1"], [1, 3])
    np.testing.assert_array_equal(out["rank"], [2, 0])  # token 0 is third under the lens
    np.testing.assert_allclose(out["log_prob"], np.log([0.1, 0.8]), rtol=1e-6)
    p = np.exp(final)
    np.testing.assert_allclose(out["kl"], (p * (final - lens)).sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(out["is_input"], [True, False])
    same = jax.device_get(exp.lens_statistics(jnp.asarray(final), jnp.asarray(final),
                                              jnp.array([0, 0])))
    np.testing.assert_allclose(same["kl"], 0.0, atol=1e-6)
    np.testing.assert_array_equal(same["rank"], [0, 0])


def test_settling_layer_is_where_the_last_run_of_agreement_starts():
    agrees = np.array([[True, False, False, True],
                       [False, True, False, True],
                       [True, True, False, True],
                       [True, True, True, True]])
    # token 0 agrees at depth 0 but breaks at 1: it settles at 2; token 3 always agreed.
    np.testing.assert_array_equal(exp.settling_layer(agrees), [2, 1, 3, 0])
    with pytest.raises(ValueError, match="last depth"):
        exp.settling_layer(agrees[:-1])


def test_spearman_matches_the_rank_difference_formula():
    x = np.arange(4)
    assert exp.spearman(x, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(
        1 - 6 * 2 / (4 * 15))
    rows = np.array([[4.0, 3.0, 2.0, 1.0], [1.0, 10.0, 100.0, 1000.0]])
    np.testing.assert_allclose(exp.spearman(x, rows), [-1.0, 1.0])


def test_sentence_bootstrap_weights_and_the_weighted_median():
    groups = np.array([0, 0, 1, 2, 2, 2])
    weights = exp.sentence_weights(groups, 200, seed=0)
    assert weights.shape == (200, 6)
    # Each resample draws 3 sentences; a sentence's tokens share its count.
    counts = np.stack([weights[:, 0], weights[:, 2], weights[:, 3]], axis=1)
    np.testing.assert_array_equal(counts.sum(1), 3)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 1])
    values = np.array([1.0, 2.0, 3.0, 10.0])
    w = np.array([[1, 1, 1, 1], [0, 0, 0, 1], [3, 0, 0, 1]], float)
    np.testing.assert_array_equal(exp.weighted_median(values, w), [2.0, 10.0, 1.0])


def test_lens_equals_unembed_and_is_exact_at_the_last_depth():
    config = pretrained.llama.llama_config(
        vocab_size=50, model_dim=16, num_heads=2, num_kv_heads=1, num_layers=1, mlp_dim=24,
        max_len=16, rope_base=10000.0, norm_epsilon=1e-5)
    params = ann.DecoderOnlyLM(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(2), p.shape),
                          params["params"])  # a final-norm scale that is not all ones
    model = pretrained.CausalLM(config, params, tokenizer=None, path=Path("."))
    stream = jax.random.normal(jax.random.key(1), (3, 5, 16))  # [depths, N, D]
    out = jax.device_get(exp.lens_fn(config)(params["decoder"], stream, jnp.arange(5)))
    log_probs = np.asarray(jax.nn.log_softmax(model.unembed(stream), axis=-1))
    np.testing.assert_array_equal(out["top1"], log_probs.argmax(-1))
    np.testing.assert_allclose(
        out["kl"][0], (np.exp(log_probs[-1]) * (log_probs[-1] - log_probs[0])).sum(-1),
        rtol=1e-4)
    np.testing.assert_allclose(out["kl"][-1], 0.0, atol=1e-5)
    assert (out["rank"][-1] == 0).all()


# --------------------------------------------------------------------------- the rule


def _numbers(median=(27.0, 25.0, 29.0), rho=(-0.97, -0.99, -0.95), num_layers=30) -> dict:
    def record(values, depth=None):
        mean, lo, hi = values
        out = {"mean": mean, "ci95": [lo, hi], "n": 100}
        return out if depth is None else {**out, "depth": depth}

    metrics = {"median_settling_layer": record(median), "kl_depth_spearman": record(rho),
               "mean_settling_layer": record((26.0, 25.0, 27.0)),
               "top1_agreement_two_thirds": record((0.3, 0.2, 0.4), 20),
               "top1_agreement_middle": record((0.05, 0.0, 0.1), 15),
               "kl_middle": record((10.0, 8.0, 12.0), 15),
               "input_top1_embeddings": record((0.8, 0.7, 0.9), 0),
               "settled_by_middle": record((0.05, 0.0, 0.1))}
    kl = list(np.linspace(20.0, 0.0, num_layers + 1))
    histogram = [0] * (num_layers + 1)
    histogram[25], histogram[-1] = 80, 20
    return {"metrics": metrics, "num_layers": num_layers, "two_thirds_layer": 20,
            "tokens": 100, "sentences": ["a", "b"], "per_depth": {"kl": {"mean": kl}},
            "settling_histogram": histogram,
            "middle_common_top1": [{"token": ",", "fraction": 0.4}]}


@pytest.fixture(scope="module")
def config():
    return experiment.load_config("configs/logit_lens.py:smoke")


def test_verdict_holds_for_a_late_settling_steadily_converging_lens(config):
    out = exp.verdict(_numbers(), config)
    assert out["verdict"].startswith("claim holds")
    assert "in the last third" in out["measured"]


def test_verdict_does_not_hold_for_an_early_guess_and_a_flat_kl(config):
    out = exp.verdict(_numbers(median=(8.0, 6.0, 10.0), rho=(-0.4, -0.6, -0.2)), config)
    assert out["verdict"].startswith("claim does not hold here")
    assert "in the first third" in out["measured"]


def test_verdict_is_mixed_when_the_interval_reaches_into_the_middle(config):
    # A median of 22 whose interval reaches 20 (= 2/3 of 30) is no evidence for "late".
    out = exp.verdict(_numbers(median=(22.0, 20.0, 24.0)), config)
    assert out["verdict"].startswith("mixed")
    assert exp.parts(_numbers(rho=(-0.95, -0.99, -0.9)), config)["builds_up"].startswith(
        "claim does not hold")


def test_measured_names_where_the_model_contradicts_the_claim(config):
    numbers = _numbers()
    numbers["per_depth"]["kl"]["mean"][5] = 25.0  # a rise at depth 5 (and a fall at 6)
    numbers["metrics"]["settled_by_middle"]["mean"] = 0.4
    measured = exp.verdict(numbers, config)["measured"]
    assert "Against the claim" in measured and "depths 5" in measured
    assert "40% of tokens have settled by layer 15" in measured
    assert "at layer 5 before it falls" in measured and "',' 40%" in measured
    assert "fixed by the last layer" not in measured  # 20% of tokens: below the 25% mark


def test_configs_load_and_the_sentences_start_with_the_seeds():
    for variant in ("full", "tour", "smoke"):
        c = experiment.load_config(f"configs/logit_lens.py:{variant}")
        assert c.model_path == "" and exp.sentences(c)[:3] == exp.SEED_SENTENCES
    assert 10 <= len(exp.SENTENCES) - len(exp.SEED_SENTENCES) <= 30
    assert len(set(exp.SENTENCES)) == len(exp.SENTENCES)


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
        assert lo <= metric["mean"] <= hi
    for figure in results["figures"]:
        assert (run_dir.path / figure).read_bytes()[:4] == b"\x89PNG"
    assert len(run_dir.records()) == results["tokens"]


@needs_smollm2
def test_smoke_verdict_recomputes_from_the_stored_numbers(smoke):
    config, _, results = smoke
    again = exp.verdict(results, config)
    assert again["verdict"] == results["verdict"] and again["measured"] == results["measured"]


@needs_smollm2
def test_smoke_lens_is_exact_at_the_last_layer_and_shaped_by_depth(smoke):
    config, _, results = smoke
    num_layers = results["num_layers"]
    assert num_layers == 30 and len(results["sentences"]) == config.num_sentences
    per_depth = results["per_depth"]
    assert all(len(v["mean"]) == num_layers + 1 for k, v in per_depth.items()
               if isinstance(v, dict))
    assert per_depth["kl"]["mean"][-1] == pytest.approx(0.0, abs=1e-4)
    assert per_depth["top1_agreement"]["mean"][-1] == 1.0
    settle = np.array(results["settling_layer"])
    assert len(settle) == results["tokens"] and settle.min() >= 0 and settle.max() <= num_layers
    assert sum(results["settling_histogram"]) == results["tokens"]
    table = results["table"]
    assert len(table["top1"]) == num_layers + 1
    assert all(len(row) == len(table["inputs"]) for row in table["top1"])
