"""The heads experiment: head roles, the per-seed rule, and its smoke run's results."""

import json

import ml_collections
import numpy as np
import pytest

from attnjax import analysis, experiment
from experiments import heads
from tests.helpers import tour_run

SMOKE = "configs/heads.py:smoke"


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "heads")


def _th():
    return ml_collections.ConfigDict({"coreference_probe": 0.75, "positional": 0.5,
                                      "delimiter": 0.5, "diffuse": 0.8})


# --------------------------------------------------------------------------- roles


def test_roles_keep_every_matching_role_and_classes_name_multi_role_heads():
    # 1 layer, 4 heads: coreference only; positional + delimiter; none (diffuse); none.
    scores = {"offset_-1": np.array([[0.1, 0.7, 0.1, 0.1]]),
              "offset_1": np.array([[0.0, 0.0, 0.0, 0.2]]),
              "offset_0": np.array([[0.9, 0.9, 0.9, 0.9]]),  # self is not a positional role
              "first_token": np.array([[0.0, 0.4, 0.1, 0.0]]),
              "punctuation": np.array([[0.0, 0.2, 0.1, 0.0]]),
              "normalized_entropy": np.array([[0.2, 0.3, 0.95, 0.5]])}
    probe = np.array([[0.9, 0.5, 0.5, 0.5]])
    roles = heads.coreference_roles(scores, probe, _th())
    assert roles == [[["coreference"], ["positional", "delimiter"], [], []]]
    classes = [heads.head_class(r, e, _th())
               for r, e in zip(roles[0], scores["normalized_entropy"][0], strict=True)]
    assert classes == ["coreference", "multi-role", "diffuse", "unclassified"]


def test_aer_of_a_diagonal_attention_against_diagonal_gold_is_zero():
    pairs = [(("a", "b", "c"), ("x", "y", "z")), (("a", "b"), ("x", "y"))]
    golds = [{(0, 0), (1, 1), (2, 2)}, {(0, 0), (1, 1)}]
    weights = np.zeros((1, 2, 1, 4, 4))  # [L, N, H, T, S]
    weights[0, :, 0] = np.eye(4)
    aers, diagonal = heads.aer_of(weights, pairs, golds)
    assert aers.shape == (1, 1)
    assert aers[0, 0] == pytest.approx(0.0)
    assert diagonal == pytest.approx(0.0)
    # An attention on the first source word only: 2 of 5 gold links (AER 1 - 4/10).
    weights[0, :, 0] = 0.0
    weights[0, :, 0, :, 0] = 1.0
    assert heads.aer_of(weights, pairs, golds)[0][0, 0] == pytest.approx(
        1 - 2 * 2 / (5 + 5))
    assert analysis.corpus_aer([{(0, 0), (0, 1), (0, 2)}, {(0, 0), (0, 1)}],
                               golds) == pytest.approx(0.6)


def _numbers(role_sets, drops=None):
    """Synthetic measured numbers: one coreference layer per seed with these head roles."""
    per = []
    for i, roles in enumerate(role_sets):
        per.append({"roles": [roles], "classes": [[r[0] if len(r) == 1 else "unclassified"
                                                   for r in roles]],
                    "test_ablation_drop": [drops or [0.0] * len(roles)], "seed": i})
    n = len(role_sets)
    return {"seeds": list(range(n)), "translation": None,
            "coreference": {"per_seed": per, "num_heads": len(role_sets[0]),
                            "by_num_heads": {"1": {"test_accuracy": [0.7] * n,
                                                   "num_params": 10},
                                             str(len(role_sets[0])): {
                                                 "test_accuracy": [0.8] * n,
                                                 "num_params": 10}}}}


def test_rule_holds_for_some_roles_plus_many_without_one():
    config = experiment.load_config(SMOKE)
    messy = [["coreference"], [], ["positional", "delimiter"], []]  # 3 of 4 unclean
    judged = heads.verdict(_numbers([messy, messy]), config)
    assert judged["class"] == "claim holds"
    assert "2 of 2 seeds" in judged["verdict"]
    assert judged["metrics"]["no_clean_role_fraction"]["mean"] == pytest.approx(0.75)


def test_rule_fails_without_a_specialised_head_and_with_only_clean_roles():
    config = experiment.load_config(SMOKE)
    none = [[], [], [], []]
    judged = heads.verdict(_numbers([none, none]), config)
    assert judged["class"] == "claim does not hold here"
    assert "no head has a role" in judged["verdict"]
    clean = [["coreference"], ["positional"], ["delimiter"], ["positional"]]
    judged = heads.verdict(_numbers([clean, clean]), config)
    assert judged["class"] == "claim does not hold here"
    assert "exactly one role" in judged["verdict"]
    assert heads.verdict(_numbers([clean, [["coreference"], [], [], []]]),
                         config)["class"] == "mixed"


# --------------------------------------------------------------------------- smoke run


@pytest.mark.slow  # trains the smoke variant (module fixture)
def test_smoke_results_follow_the_contract(smoke):
    config, run_dir, results = smoke
    assert results["seeds"] == list(config.seeds) and len(results["seeds"]) == 2
    assert results["rule"] == heads.rule_text(config)
    assert results["verdict"].startswith(experiment.VERDICTS)
    assert "of 2 seeds" in results["verdict"]
    for name in results["headline"]:
        metric = results["metrics"][name]
        assert len(metric["per_seed"]) == 2
        assert metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1]
    stored = json.loads((run_dir.path / "results.json").read_text())
    assert stored["verdict"] == results["verdict"]
    for figure in results["figures"]:
        assert (run_dir.path / figure).is_file()


@pytest.mark.slow  # trains the smoke variant (module fixture)
def test_smoke_verdict_is_recomputed_from_the_stored_numbers(smoke):
    config, run_dir, results = smoke
    stored = json.loads((run_dir.path / "results.json").read_text())
    assert heads.verdict(stored["numbers"], config)["verdict"] == stored["verdict"]


@pytest.mark.slow  # trains the smoke variant (module fixture)
def test_smoke_measures_every_head_of_both_models_per_seed(smoke):
    config, _, results = smoke
    numbers = results["numbers"]
    layers, h = config.transformer.num_layers, config.transformer.num_heads
    for record in numbers["coreference"]["per_seed"]:
        assert np.asarray(record["test_ablation_drop"]).shape == (layers, h)
        assert np.asarray(record["antecedent_probe"]).shape == (layers, h)
        assert all(c in heads.CLASSES for row in record["classes"] for c in row)
    t = config.translation.transformer
    for record in numbers["translation"]["per_seed"]:
        assert np.asarray(record["dev_aer"]).shape == (t.num_layers, t.num_heads)
        assert 0.0 <= record["best_dev_head_test_aer"] <= 1.0
    by = numbers["coreference"]["by_num_heads"]
    assert set(by) == {str(x) for x in config.head_counts}
    # Same model_dim: the head count does not change the parameter count.
    assert len({x["num_params"] for x in by.values()}) == 1
