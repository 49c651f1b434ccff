"""The induction experiment: its data, head scores, rule, and a smoke run (both arms)."""

import json
import math
import shutil

import numpy as np
import pytest

from attnjax import experiment
from attnjax.data import induction
from experiments import REGISTRY
from experiments import induction as exp
from tests.helpers import tour_run

SMOKE = "configs/induction.py:smoke"


# --------------------------------------------------------------------------- data


def test_sequences_tile_a_segment_of_the_drawn_period():
    batch = induction.batch_at(3, seed=0, batch_size=16, half_length=6, vocab_size=12,
                               min_half_length=2)
    tokens, period = batch["tokens"], batch["period"]
    assert tokens.shape == (16, 13) and (tokens[:, 0] == induction.BOS_ID).all()
    assert tokens[:, 1:].min() >= induction.FIRST_TOKEN_ID and tokens.max() < 12
    assert period.min() >= 2 and period.max() <= 6 and len(set(period.tolist())) > 1
    for row, n in zip(tokens, period, strict=True):
        np.testing.assert_array_equal(row[1 + n:], row[1:13 - n])
    again = induction.batch_at(3, seed=0, batch_size=16, half_length=6, vocab_size=12,
                               min_half_length=2)
    np.testing.assert_array_equal(tokens, again["tokens"])


def test_fixed_period_is_bos_x_x():
    tokens = induction.batch_at(7, seed=0, batch_size=4, half_length=5, vocab_size=10)["tokens"]
    np.testing.assert_array_equal(tokens[:, 1:6], tokens[:, 6:])


def test_copy_targets_mark_the_predictable_tokens_of_each_copy():
    # N = 4, period 3: [BOS, a, b, c, a, b, c, a, b]; inputs are positions 0..7.
    masks = induction.copy_targets(np.array([3]), 4)
    # loss position p predicts token p + 1: the first copy's b, c are tokens 2, 3 (p = 1,
    # 2); the second copy's a (token 4) is not predictable, everything after it is.
    assert np.nonzero(masks["first"][0])[0].tolist() == [1, 2]
    assert np.nonzero(masks["second"][0])[0].tolist() == [4, 5, 6, 7]
    # query 4 holds the second a: the token after the first a is b at position 2.
    assert masks["prefix_key"][0].tolist() == [-1] * 4 + [2, 3, 4, 5]


def test_order_blind_loss_knows_the_remaining_multiset_only():
    # segment [a, b, c]: predicting b from {b, c} costs log 2, c from {c} costs 0.
    tokens = np.array([[1, 2, 3, 4, 2, 3, 4]])
    assert induction.order_blind_loss(tokens, np.array([3])) == pytest.approx(math.log(2) / 2)
    # segment [a, b, b]: after a only b's remain, so nothing is uncertain.
    tokens = np.array([[1, 2, 3, 3, 2, 3, 3]])
    assert induction.order_blind_loss(tokens, np.array([3])) == pytest.approx(0.0)


# --------------------------------------------------------------------------- scores


def test_hand_set_induction_and_previous_token_heads_score_one_for_any_period():
    half = 5
    t = 2 * half
    period = np.array([5, 3])
    key = induction.copy_targets(period, half)["prefix_key"]
    weights = np.zeros((1, 2, 2, t, t))  # [L, B, H, T, T]
    for b in range(2):
        weights[0, b, 0, 0, 0] = 1.0
        weights[0, b, 0, np.arange(1, t), np.arange(t - 1)] = 1.0  # previous token
        for q in range(t):
            weights[0, b, 1, q, key[b, q] if key[b, q] >= 0 else q] = 1.0
    scores = exp.head_pattern_scores(weights, period)
    np.testing.assert_allclose(scores["prefix_matching"][0], [0.0, 1.0])
    np.testing.assert_allclose(scores["previous_token"][0], [1.0, 0.0], atol=1e-12)


# --------------------------------------------------------------------------- the rule


def _numbers(icl, heads, recovered, control_icl, seeds=3):
    main = {"icl_score": [icl] * seeds, "max_prefix_matching": [heads] * seeds,
            "ablation_recovered_fraction": [recovered] * seeds,
            "loss_first_copy": [3.4] * seeds, "loss_second_copy": [3.4 - icl] * seeds,
            "induction_head_step": [100] * seeds, "icl_step": [100] * seeds,
            "together": [True] * seeds}
    control = {"icl_score": [control_icl] * seeds, "max_prefix_matching": [0.1] * seeds,
               "loss_second_copy": [3.4 - control_icl] * seeds}
    return {"seeds": list(range(seeds)), "chance_loss": 3.4, "order_blind_icl_score": 2.0,
            "main": main, "control": control}


@pytest.mark.parametrize(
    "numbers, verdict",
    [
        ((3.2, 0.9, 0.9, 0.5), "claim holds"),
        ((3.2, 0.9, 0.9, 3.2), "claim does not hold here"),  # the control learns it too
        ((3.2, 0.9, 0.1, 0.5), "claim does not hold here"),  # ablation changes nothing
        ((0.4, 0.1, 0.0, 0.4), "claim does not hold here"),  # no induction at all
    ],
)
def test_verdict_needs_all_four_parts_per_seed(numbers, verdict):
    config = experiment.load_config(SMOKE)
    out = exp.verdict(_numbers(*numbers), config)
    assert out["verdict"].startswith(verdict + ":")
    assert ("holds in 3 of 3 seeds" if verdict == "claim holds" else "holds in 0 of 3 seeds") \
        in out["verdict"]


def test_mixed_seeds_give_mixed():
    config = experiment.load_config(SMOKE)
    numbers = _numbers(3.2, 0.9, 0.9, 0.5)
    numbers["main"]["icl_score"][0] = 0.5
    out = exp.verdict(numbers, config)
    assert out["verdict"].startswith("mixed: holds in 2 of 3 seeds")


def test_variants_follow_the_seed_protocol():
    full = experiment.load_config("configs/induction.py")
    assert full.variant == "full" and len(full.seeds) >= 5
    assert len(experiment.load_config("configs/induction.py:tour").seeds) == 3
    smoke = experiment.load_config(SMOKE)
    assert len(smoke.seeds) == 2 and smoke.control_layers == 1 and smoke.model.num_layers == 2


# --------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke_run(tour_smoke):
    config, run_dir, results = tour_run(tour_smoke, "induction")
    return run_dir.path, config, results


def test_smoke_results_meet_the_contract(smoke_run):
    workdir, config, results = smoke_run
    stored = json.loads((workdir / "results.json").read_text())
    assert stored["claim"] == REGISTRY["induction"].claim
    assert stored["seeds"] == [0, 1]
    assert "1-layer control" in stored["rule"] and f"+ {config.icl_margin} nats" in stored["rule"]
    assert "of 2 seeds" in stored["verdict"]
    assert stored["headline"] == exp.HEADLINE
    for metric in stored["metrics"].values():
        assert len(metric["per_seed"]) == 2
        assert metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1]
    assert set(stored["timeline"]) == {"induction_head_step", "icl_step", "together"}
    assert [p["value"] for p in stored["published"]] == [
        0.4, "no induction heads", "2.5e9 to 5e9 tokens"]  # Olsson et al. 2022, quoted
    assert all(p["source"].startswith("Olsson et al. 2022") for p in stored["published"])
    assert (workdir / "induction.png").read_bytes()[:4] == b"\x89PNG"


def test_smoke_verdict_is_recomputed_from_the_stored_numbers(smoke_run):
    workdir, config, results = smoke_run
    stored = json.loads((workdir / "results.json").read_text())
    assert exp.verdict(stored["numbers"], config) == {
        "verdict": stored["verdict"], "measured": stored["measured"]}


def test_smoke_history_has_head_scores_of_every_seed_and_arm(smoke_run):
    workdir, config, results = smoke_run
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("split") == "eval"]
    for run, layers in (("2-layer", 2), ("1-layer", 1)):
        for seed in config.seeds:
            mine = [r for r in evals if r["run"] == run and r["seed"] == seed]
            steps = [r["step"] for r in mine]
            assert steps == list(range(config.eval_every, config.train.num_steps + 1,
                                       config.eval_every))
            assert np.asarray(mine[-1]["prefix_matching"]).shape == (layers,
                                                                     config.model.num_heads)
    curve = results["numbers"]["main"]["curve"][0]
    assert curve["step"] == steps


def test_rerunning_a_finished_run_keeps_its_history_and_numbers(smoke_run, tmp_path):
    # The old bug: a restart deleted metrics.jsonl and the timeline came from the rest.
    # (A copy of the tour's run folder, checkpoints included: the tour's stays as it was.)
    tour_dir, config, results = smoke_run
    workdir = tmp_path / "induction"
    shutil.copytree(tour_dir, workdir)
    before = (workdir / "metrics.jsonl").read_text()
    again = experiment.run_experiment("induction", exp.run, config,
                                      experiment.RunDir.create("induction", workdir))
    assert (workdir / "metrics.jsonl").read_text() == before
    assert again["numbers"]["main"]["icl_score"] == pytest.approx(
        results["numbers"]["main"]["icl_score"], abs=1e-6)
    assert again["timeline"] == results["timeline"]
