"""The fading_memory experiment: recall at a distance, matched arms, equal tuning, the
per-architecture rule, and its smoke run's results."""

import json

import ml_collections
import numpy as np
import pytest

from attnjax import experiment
from attnjax.data import recall
from experiments import fading_memory as exp
from tests.helpers import tour_run

SMOKE = "configs/fading_memory.py:smoke"


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "fading_memory")


# --------------------------------------------------------------------------- data


def test_distance_batch_puts_the_only_key_d_tokens_before_the_query():
    batch = recall.distance_batch(3, 200, 20, [1, 7, 19], num_keys=4, num_noise=5)
    first_key = recall.QUERY_ID + 1
    tokens, d = batch["tokens"], batch["distance"]
    assert set(d.tolist()) == {1, 7, 19}
    assert (tokens[:, -1] == recall.QUERY_ID).all()
    rows = np.arange(200)
    np.testing.assert_array_equal(tokens[rows, 19 - d], first_key + batch["label"])
    is_key = (tokens >= first_key) & (tokens < first_key + 4)
    assert (is_key.sum(1) == 1).all()  # no key among the noise
    again = recall.distance_batch(3, 200, 20, [1, 7, 19], num_keys=4, num_noise=5)
    np.testing.assert_array_equal(again["tokens"], tokens)


def test_distance_batch_refuses_distances_outside_the_sequence():
    with pytest.raises(ValueError, match=r"\[1, length - 1 = 9\]"):
        recall.distance_batch(0, 2, 10, [10])
    with pytest.raises(ValueError, match="distances"):
        recall.distance_batch(0, 2, 10, [0])


def test_rnn_widths_match_the_transformer_parameter_count():
    config = experiment.load_config("configs/fading_memory.py:tour")
    models = exp.matched_models(config, recall.vocab_size(8, 16), 64, 8)
    target = exp.num_params(models["transformer"], 8)
    for name in ("simple", "gru", "lstm"):
        assert abs(exp.num_params(models[name], 8) - target) / target < 0.03, name


# --------------------------------------------------------------------------- the rule


def _numbers(drops, transformer_worst=1.0):
    """Arms whose accuracy is 1.0 at distance 1 and 1 - drop at distance 9, per seed."""
    arms = {}
    for name, per_seed in drops.items():
        seeds = []
        for drop in per_seed:
            longest = 1.0 - drop if name != "transformer" else min(1.0 - drop, transformer_worst)
            seeds.append({"accuracy_by_distance": {1: 1.0, 9: longest},
                          "gradient_by_distance": {"init": [1.0] * 10, "trained": [1.0] * 10}})
        arms[name] = {"per_seed": seeds}
    return {"seeds": [0, 1, 2], "num_keys": 8, "arms": arms,
            "num_params": dict.fromkeys(drops, 100)}


def _config():
    return ml_collections.ConfigDict({
        "learning_rates": [1e-3, 3e-3], "recall": {"test_distances": (1, 9)},
        "bars": {"fade_drop": 0.25, "transformer_min_accuracy": 0.9},
        "verdict": {"holds_at": 0.8, "fails_at": 0.2}})


@pytest.mark.parametrize("drops, expected", [
    ({"transformer": [0, 0, 0], "simple": [0.5] * 3, "lstm": [0.3] * 3}, "claim holds"),
    # one RNN keeps the key: the RNN part is mixed, so is the claim
    ({"transformer": [0, 0, 0], "simple": [0.5] * 3, "lstm": [0.0] * 3}, "mixed"),
    # no RNN fades: does not hold, whatever the transformer does
    ({"transformer": [0, 0, 0], "simple": [0.1] * 3, "lstm": [0.0] * 3},
     "claim does not hold here"),
    # the transformer fades too
    ({"transformer": [0.5] * 3, "simple": [0.5] * 3, "lstm": [0.5] * 3},
     "claim does not hold here"),
])
def test_verdict_combines_a_part_per_architecture(drops, expected):
    out = exp.verdict(_numbers(drops), _config())
    assert out["verdict"].startswith(expected + ":"), out["verdict"]
    assert "holds in 3 of 3 seeds" in out["verdict"] or "holds in 0 of 3 seeds" in out["verdict"]


def test_a_transformer_at_chance_does_not_count_as_holding_on():
    out = exp.verdict(_numbers({"transformer": [0, 0, 0], "simple": [0.5] * 3},
                               transformer_worst=0.2), _config())
    assert out["parts"]["transformer"] == "claim does not hold here"


# --------------------------------------------------------------------------- smoke run


def test_smoke_results_meet_the_contract_with_one_value_per_seed(smoke):
    config, run_dir, results = smoke
    stored = json.loads((run_dir.path / "results.json").read_text())
    assert stored["seeds"] == [0, 1]
    assert set(stored["arms"]) == {"transformer", "lstm"}
    for name in stored["headline"]:
        assert len(stored["metrics"][name]["per_seed"]) == 2
    assert exp.verdict(stored, config)["verdict"] == stored["verdict"]
    assert stored["rule"] == exp.rule(config)
    assert (run_dir.path / "fading_memory.png").read_bytes()[:4] == b"\x89PNG"


def test_smoke_gives_every_arm_the_same_grid_and_picks_the_rate_on_dev(smoke):
    config, _, results = smoke
    for entry in results["arms"].values():
        for seed in entry["per_seed"]:
            dev = seed["dev_accuracy_by_learning_rate"]
            assert set(dev) == {f"{r:g}" for r in config.learning_rates}
            assert dev[f"{seed['learning_rate']:g}"] == max(dev.values())
            grads = seed["gradient_by_distance"]
            assert len(grads["init"]) == len(grads["trained"]) == config.recall.length
            assert all(g >= 0 for g in grads["init"])
    counts = results["num_params"]
    assert abs(counts["lstm"] - counts["transformer"]) / counts["transformer"] < 0.05
