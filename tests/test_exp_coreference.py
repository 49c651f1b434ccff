"""The coreference experiment: per-seed data sets, the causal ablation test, the per-seed
rule, and its smoke run's results."""

import json

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax import analysis, experiment, nn
from attnjax.data import coreference
from experiments import coreference as exp
from tests.helpers import tour_run

SMOKE = "configs/coreference.py:smoke"


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "coreference")


# --------------------------------------------------------------------------- data


def test_make_datasets_draws_per_seed_at_one_length_with_the_same_held_out_pairs():
    config = experiment.load_config(SMOKE)
    a = coreference.make_datasets(config, seed=1)
    b = coreference.make_datasets(config, seed=2)
    assert a["length"] == b["length"] == coreference.max_length(config.task.max_filler)
    assert a["train"]["tokens"].shape == b["train"]["tokens"].shape
    assert not np.array_equal(a["train"]["tokens"], b["train"]["tokens"])
    for family in coreference.FAMILIES:  # the split is the task's, not the draw's
        assert a["task"].pairs(family.name, "test") == b["task"].pairs(family.name, "test")
    # The identity readout carries the candidates' token ids.
    rows = np.arange(len(a["train"]["label"]))
    np.testing.assert_array_equal(
        a["train"]["choices"], a["train"]["tokens"][rows[:, None], a["train"]["candidates"]])


def test_max_length_bounds_every_sentence():
    task = coreference.CoreferenceTask(0)
    examples = task.sample(300, "train", filler_tokens=range(9)) + task.sample(
        300, "test", filler_tokens=8)
    assert max(len(e.tokens) for e in examples) <= coreference.max_length(8)


# --------------------------------------------------------------------------- ablation


class _TwoHeadCopy(flax_nn.Module):
    """One attention layer (2 heads) and a readout: a model whose output is only what its
    heads say."""

    @flax_nn.compact
    def __call__(self, tokens, pronoun, *, deterministic=True):
        x = flax_nn.Embed(10, 8)(tokens)
        y = nn.MultiHeadAttention(num_heads=2, name="self_attention")(x)
        return flax_nn.Dense(2)(y[jnp.arange(len(tokens)), pronoun])


def test_zero_ablating_every_head_leaves_only_the_output_bias():
    model = _TwoHeadCopy()
    tokens = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    pronoun = jnp.array([3, 2])
    variables = model.init(jax.random.key(0), tokens, pronoun)
    _, maps = analysis.capture_attention(model, variables, tokens, pronoun)
    path = analysis.layer_paths(maps, "self_attention")[0]
    out = analysis.ablate_heads(model, variables, tokens, pronoun, heads={path: [0, 1]})
    bias = variables["params"]["self_attention"]["out"]["bias"]
    dense = variables["params"]["Dense_0"]
    expected = bias @ dense["kernel"] + dense["bias"]
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), rtol=1e-5, atol=1e-6)
    one = analysis.ablate_heads(model, variables, tokens, pronoun, heads={path: [0]})
    assert not np.allclose(one, out)


# --------------------------------------------------------------------------- the rule


def _seed(worst, probe, drop_chosen, drop_control):
    return {"worst_accuracy": worst, "test_accuracy": worst,
            "chosen_head": {"layer": 0, "head": 0, "test_probe": probe},
            "ablation": {"drop_chosen": drop_chosen, "drop_control": drop_control},
            "baselines": {"first_candidate": 0.5, "nearest_candidate": 0.5, "random": 0.5}}


def _config():
    return ml_collections.ConfigDict({
        "readout": "identity", "ablation": "mean",
        "bars": {"min_accuracy": 0.9, "min_probe_accuracy": 0.9, "min_excess_drop": 0.1},
        "verdict": {"holds_at": 0.8, "fails_at": 0.2}})


@pytest.mark.parametrize("seeds, expected", [
    ([(0.95, 0.95, 0.4, 0.0)] * 3, "claim holds"),
    # accurate and attending, but the control hurts as much: the head is not needed
    ([(0.95, 0.95, 0.4, 0.35)] * 3, "claim does not hold here"),
    ([(0.95, 0.95, 0.4, 0.0)] * 2 + [(0.7, 0.95, 0.4, 0.0)], "mixed"),
    ([(0.95, 0.5, 0.4, 0.0)] * 3, "claim does not hold here"),
])
def test_verdict_needs_accuracy_probe_and_an_ablation_drop_beyond_the_control(seeds, expected):
    numbers = {"per_seed": [_seed(*s) for s in seeds]}
    out = exp.verdict(numbers, _config())
    assert out["verdict"].startswith(expected + ":")
    k = sum(s[0] >= 0.9 and s[1] >= 0.9 and s[2] - s[3] >= 0.1 for s in seeds)
    assert f"holds in {k} of 3 seeds" in out["verdict"]


def test_rule_states_the_thresholds_and_the_seed_fractions():
    text = exp.rule(_config())
    assert "90%" in text and "10%" in text and "80%" in text and "mean-ablating" in text


# --------------------------------------------------------------------------- smoke run


def test_smoke_results_meet_the_contract_with_one_value_per_seed(smoke):
    config, run_dir, results = smoke
    stored = json.loads((run_dir.path / "results.json").read_text())
    assert stored["seeds"] == [0, 1]
    assert stored["rule"] == exp.rule(config)
    for name in stored["headline"]:
        assert len(stored["metrics"][name]["per_seed"]) == 2
        lo, hi = stored["metrics"][name]["ci95"]
        assert lo <= stored["metrics"][name]["mean"] <= hi
    # The verdict is a pure function of the stored numbers.
    assert exp.verdict(stored, config)["verdict"] == stored["verdict"]


def test_smoke_chooses_the_head_on_validation_and_ablates_a_different_control(smoke):
    config, _, results = smoke
    for seed in results["per_seed"]:
        validation = np.array(seed["validation_probe_per_layer_head"])
        chosen = seed["chosen_head"]
        assert (chosen["layer"], chosen["head"]) == np.unravel_index(validation.argmax(),
                                                                     validation.shape)
        ablation = seed["ablation"]
        assert ablation["control_head"] != chosen["head"]
        assert len(ablation["accuracy_by_head"]) == config.transformer.num_heads
        full = seed["test_accuracy"]
        drop = full - ablation["accuracy_by_head"][str(chosen["head"])]
        assert drop == pytest.approx(ablation["drop_chosen"])
        assert set(seed["accuracy_by_filler_tokens"]) == {"0", "6"}  # JSON keys


def test_smoke_shows_the_seed_sentences_with_bars_and_a_figure(smoke):
    _, run_dir, results = smoke
    texts = [s["text"] for s in results["seed_sentences"]]
    assert texts == list(coreference.SEED_SENTENCES)
    trophy = results["seed_sentences"][0]
    assert trophy["gold_antecedent"] == "trophy" and "trophy " in trophy["bars"]
    assert set(trophy["attention_from_pronoun"]) == {"trophy", "suitcase"}
    assert (run_dir.path / results["figures"][0]).read_bytes()[:4] == b"\x89PNG"
