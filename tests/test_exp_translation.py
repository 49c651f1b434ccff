"""experiments/translation.py end to end on its smoke config (2 seeds, every arm with the
same learning-rate grid, head chosen on dev)."""

import json

import numpy as np
import pytest

from experiments import translation
from tests.helpers import tour_run

NAME = "translation"


@pytest.fixture(scope="module")
def smoke_run(tour_smoke):
    config, run_dir, results = tour_run(tour_smoke, "translation")
    return run_dir.path, config, results


def test_results_follow_the_contract_with_one_value_per_seed(smoke_run):
    workdir, config, results = smoke_run
    assert results == json.loads((workdir / "results.json").read_text())
    assert results["seeds"] == list(config.seeds) and len(config.seeds) == 2
    assert results["rule"] == translation.rule_text(config)
    assert results["headline"] == ["transformer_exact_match", "transformer_head_aer"]
    for name in config.models:
        for kind in ("exact_match", "token_accuracy"):
            metric = results["metrics"][f"{name}_{kind}"]
            assert len(metric["per_seed"]) == 2
            lo, hi = metric["ci95"]
            assert 0.0 <= lo <= metric["mean"] <= hi <= 1.0
    for key in ("transformer_head_aer", "diagonal_aer", "ibm1_aer", "gru_attention_head_aer"):
        assert len(results["metrics"][key]["per_seed"]) == 2
    assert results["verdict"].split(":")[0] in ("claim holds", "mixed", "claim does not hold here")
    assert "of 2 seeds" in results["verdict"]


def test_verdict_is_recomputed_from_the_stored_numbers(smoke_run):
    _, config, results = smoke_run
    again = translation.verdict(results["numbers"], config)
    assert again == {"verdict": results["verdict"], "measured": results["measured"]}


def test_learning_rate_and_head_are_chosen_on_dev(smoke_run):
    _, config, results = smoke_run
    transformer = results["numbers"]["arms"]["transformer"]
    for entry in transformer["per_seed"]:
        dev = entry["dev_exact_match_by_lr"]
        assert set(dev) == {f"{lr:g}" for lr in config.learning_rates}
        assert dev[f"{entry['learning_rate']:g}"] == max(dev.values())
        a = entry["alignment"]
        dev_aers = np.asarray(a["dev_aer_per_layer_head"])
        assert dev_aers.shape == (config.transformer.num_layers, config.transformer.num_heads)
        assert np.asarray(a["test_aer_per_layer_head"]).shape == dev_aers.shape
        layer, head = a["chosen"]["layer"], a["chosen"]["head"]
        assert dev_aers[layer, head] == dev_aers.min()
        assert a["chosen_test_aer"] == a["test_aer_per_layer_head"][layer][head]


def test_arms_are_parameter_matched_and_trained_on_every_seed_and_rate(smoke_run):
    workdir, config, results = smoke_run
    arms = results["numbers"]["arms"]
    target = arms["transformer"]["num_params"]
    for name in config.models[1:]:
        assert abs(arms[name]["num_params"] / target - 1) <= config.rnn.match_tolerance
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    trained = {(r["run"], r["seed"], r["learning_rate"])
               for r in records if r.get("split") == "train"}
    assert trained == {(name, s, lr) for name in config.models for s in config.seeds
                       for lr in config.learning_rates}


def test_baselines_and_figures(smoke_run):
    workdir, _, results = smoke_run
    for b in results["numbers"]["baselines"]:
        assert 0.0 <= b["ibm1_aer"] <= 1.0 and 0.0 <= b["diagonal_aer"] <= 1.0
    assert results["figures"] == ["cross_attention_transformer.png",
                                  "cross_attention_gru_attention.png"]
    for figure in results["figures"]:
        assert (workdir / figure).read_bytes()[:4] == b"\x89PNG"
