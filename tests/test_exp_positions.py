"""experiments/positions: the task generators against hand-worked answers (which token is the
label, what a permutation does to it), the two architectures' order-blindness without
positions, dev-split selection of the best encoding, the rule on constructed numbers, and the
smoke run from the shared smoke tour (contract, verdict recomputed from the stored numbers)."""

import jax
import numpy as np
import pytest

from attnjax import experiment
from attnjax.data import induction
from attnjax.data.vocab import PAD_ID
from experiments import REGISTRY, positions
from tests.helpers import tour_run

SMOKE = "configs/positions.py:smoke"


def config(**rule):
    c = experiment.load_config(SMOKE)
    c.unlock()
    c.rule.update(rule)
    return c


# --------------------------------------------------------------------------- the tasks


def test_recall_label_is_the_token_after_the_matching_one_in_the_first_copy():
    n = 6
    b = positions.recall_batch(np.random.default_rng(0), 64, n, 18)
    tokens, position, label = b["tokens"], b["position"], b["label"]
    assert tokens.shape == (64, 1 + 2 * n)
    rows = np.arange(64)
    assert np.all((position > n) & (position < 2 * n))  # inside the second copy, j in 1..N-1
    # The second copy repeats the first: x_j at position N + j, so the answer x_{j+1} sits at
    # j + 1 = position - N + 1 in the first copy.
    np.testing.assert_array_equal(label, tokens[rows, position - n + 1])
    np.testing.assert_array_equal(tokens[rows, position], tokens[rows, position - n])
    after = np.arange(tokens.shape[1])[None, :] > position[:, None]
    assert np.all(tokens[after] == PAD_ID) and np.all(tokens[~after] != PAD_ID)
    assert np.all(label >= induction.FIRST_TOKEN_ID)


def test_bag_label_is_the_unique_mode_and_survives_any_permutation():
    rng = np.random.default_rng(1)
    b = positions.bag_batch(rng, 200, 12, 6)
    body = b["tokens"][:, :12]
    assert np.all(b["tokens"][:, 12] == positions.BAG_FIRST_ID + 6)  # the query token
    assert np.all(b["position"] == 12)
    for row, label in zip(body, b["label"], strict=True):
        counts = np.bincount(row, minlength=8)
        assert counts[label] == counts.max() and np.sum(counts == counts.max()) == 1
        # A function of the multiset: the same mode after shuffling.
        assert np.bincount(rng.permutation(row), minlength=8).argmax() == label


def test_precedence_label_is_whichever_of_a_and_b_comes_first():
    b = positions.precedence_batch(np.random.default_rng(2), 200, 12, 8)
    a_id, b_id = positions.BAG_FIRST_ID + 8, positions.BAG_FIRST_ID + 9
    body = b["tokens"][:, :12]
    assert np.all((body == a_id).sum(1) == 1) and np.all((body == b_id).sum(1) == 1)
    first_a = np.argmax(body == a_id, 1) < np.argmax(body == b_id, 1)
    np.testing.assert_array_equal(b["label"], np.where(first_a, a_id, b_id))
    np.testing.assert_array_equal(b["candidates"], np.tile([[a_id, b_id]], (200, 1)))
    assert 0.35 < first_a.mean() < 0.65
    # The same tokens with A and B swapped give the other answer: order is the whole task.
    swapped = np.where(body == a_id, b_id, np.where(body == b_id, a_id, body))
    assert np.all(np.argmax(swapped == a_id, 1) < np.argmax(swapped == b_id, 1)) == \
        np.all(~first_a)


def test_accuracy_scores_among_candidates_when_given():
    logits = np.array([[0.0, 5.0, 1.0, 2.0], [0.0, 5.0, 3.0, 2.0]])
    two_way = {"label": np.array([3, 3]), "candidates": np.array([[2, 3], [2, 3]])}
    assert positions.accuracy(logits, two_way) == 0.5  # row 0: 2.0 > 1.0; row 1: 3.0 > 2.0
    assert positions.accuracy(logits, {"label": np.array([1, 2])}) == 0.5  # full argmax


def test_tasks_rejects_unknown_or_repeated_task_names():
    c = config()
    c.order_tasks = ("precedence", "sorting")
    with pytest.raises(ValueError, match="sorting"):
        positions.Tasks(c)
    c.order_tasks = ("bag",)
    with pytest.raises(ValueError, match="distinct"):
        positions.Tasks(c)


def test_training_batches_are_a_pure_function_of_seed_and_step():
    c = config()
    tasks = positions.Tasks(c)
    from attnjax.train import SeedRngs

    for name in tasks.names:
        one = tasks.batch(name, SeedRngs(positions.member_seed(0, 3)), 5, 8)
        two = tasks.batch(name, SeedRngs(positions.member_seed(0, 3)), 5, 8)
        other = tasks.batch(name, SeedRngs(positions.member_seed(0, 3)), 6, 8)
        assert set(one) == set(positions.TRAIN_KEYS)
        for k in one:
            np.testing.assert_array_equal(one[k], two[k])
        assert one["tokens"].shape == (8, tasks.length)
        assert not np.array_equal(one["tokens"], other["tokens"])
    with pytest.raises(ValueError, match="seeds"):
        positions.member_seed(0, positions.SEED_STRIDE)


# --------------------------------------------------------------------------- the models


@pytest.mark.parametrize("arch, blind", [("encoder", True), ("decoder", False)])
def test_without_positions_only_the_encoder_is_blind_to_the_order(arch, blind):
    """The claim's mechanism: a bidirectional model without positions reads the same state
    at the query whatever the order of the other tokens; a causal one does not."""
    c = config()
    # Two layers: with one, the causal model's *last* position attends to every token with
    # no positions either, so it too reads a function of the multiset; the order leaks
    # only through the earlier positions' prefix states, read by the second layer.
    c.transformer.num_layers = 2
    model = positions.build_model(arch, "none", c, 12, 9)
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 12, size=(4, 9)).astype(np.int32)
    position = np.full(4, 8, np.int32)
    perm = np.concatenate([rng.permutation(8), [8]])  # shuffle all but the query
    params = model.init(jax.random.key(0), tokens, position)
    a = model.apply(params, tokens, position)
    b = model.apply(params, tokens[:, perm], position)
    assert a.shape == (4, 12)
    if blind:
        np.testing.assert_allclose(a, b, atol=1e-5)
    else:
        assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
    # With positions, the encoder sees the order too.
    if arch == "encoder":
        model = positions.build_model(arch, "learned", c, 12, 9)
        params = model.init(jax.random.key(0), tokens, position)
        diff = model.apply(params, tokens, position) - model.apply(params, tokens[:, perm],
                                                                    position)
        assert np.abs(np.asarray(diff)).max() > 1e-3


def test_next_token_readout_checks_the_position_shape():
    model = positions.build_model("decoder", "rope", config(), 12, 9)
    tokens = np.ones((2, 9), np.int32)
    with pytest.raises(ValueError, match="position"):
        model.init(jax.random.key(0), tokens, np.zeros((2, 1), np.int32))
    with pytest.raises(ValueError, match="architecture"):
        positions.build_model("rnn", "rope", config(), 12, 9)


# --------------------------------------------------------------------------- the rule


def test_best_encoding_is_chosen_on_dev_not_on_test():
    dev = {"none": [0.9, 0.9], "rope": [0.8, 0.5], "alibi": [0.7, 0.6]}
    assert positions.best_on_dev(dev, ("none", "rope", "alibi")) == ["rope", "alibi"]
    tie = {"none": [0.0], "rope": [0.5], "alibi": [0.5]}
    assert positions.best_on_dev(tie, ("none", "rope", "alibi")) == ["rope"]
    numbers = _numbers({("encoder", "precedence"): {"none": 0.5, "rope": 0.9, "alibi": 0.95}},
                       dev_override={"alibi": 0.1})
    g = positions.gaps(numbers, "encoder", "precedence", ("none", "rope", "alibi"))
    assert g["chosen"] == ["rope"] * 3  # alibi is better on test but worse on dev
    np.testing.assert_allclose(g["gap"], [0.4] * 3)


def _numbers(accuracies, dev_override=None, seeds=3):
    """Numbers in ``measure``'s form: ``accuracies[(arch, task)][encoding]`` on test (and on
    dev unless ``dev_override[encoding]``), the same for every seed."""
    arms: dict = {}
    tasks = []
    for (arch, task), per_encoding in accuracies.items():
        tasks.append(task) if task not in tasks else None
        for e, acc in per_encoding.items():
            dev = (dev_override or {}).get(e, acc)
            arms.setdefault(arch, {}).setdefault(e, {"per_task": {}})["per_task"][task] = {
                "dev": [dev] * seeds, "test": [acc] * seeds}
    return {"seeds": list(range(seeds)), "tasks": tasks, "arms": arms}


def test_verdict_follows_the_rule_on_constructed_numbers():
    c = config(min_accuracy=0.8, needed_gap=0.2, recovered_gap=0.05, control_gap=0.05)
    c.order_tasks = ("precedence",)
    c.control_task = "bag"
    c.encodings = ("none", "rope")

    def judged(enc_prec, dec_prec, bag):
        return positions.verdict(_numbers({
            ("encoder", "precedence"): enc_prec, ("encoder", "bag"): bag,
            ("decoder", "precedence"): dec_prec, ("decoder", "bag"): bag}), c)

    holds = judged({"none": 0.5, "rope": 0.99}, {"none": 0.97, "rope": 0.99},
                   {"none": 0.9, "rope": 0.92})
    assert experiment.verdict_class(holds["verdict"]) == "claim holds"
    assert set(holds["parts"].values()) == {"claim holds"}
    # The causal mask does not recover the order: that part fails, the claim is mixed.
    mixed = judged({"none": 0.5, "rope": 0.99}, {"none": 0.6, "rope": 0.99},
                   {"none": 0.9, "rope": 0.92})
    assert experiment.verdict_class(mixed["verdict"]) == "mixed"
    assert experiment.verdict_class(mixed["parts"]["decoder/precedence"]) == "claim does not hold"
    assert "recovers the order (decoder without positions close to the best) on: none" in \
        mixed["verdict"]
    # A best encoding below min_accuracy has not learned the task: no evidence either way.
    unlearned = judged({"none": 0.5, "rope": 0.75}, {"none": 0.75, "rope": 0.75},
                       {"none": 0.5, "rope": 0.5})
    assert experiment.verdict_class(unlearned["verdict"]) == "claim does not hold"


# --------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "positions")


def test_smoke_run_keeps_the_contract_and_its_verdict_recomputes(smoke):
    c, run_dir, stored = smoke
    experiment.check_results("positions", stored, run_dir)
    assert stored["claim"] == REGISTRY["positions"].claim
    assert stored["rule"] == positions.rule(c)
    assert stored["seeds"] == list(c.seeds)
    assert stored["tasks"] == [*c.order_tasks, c.control_task]
    for arch in c.archs:
        for task in stored["tasks"]:
            for e in c.encodings:
                metric = stored["metrics"][f"{arch}_{task}_{e}"]
                assert len(metric["per_seed"]) == len(c.seeds)
                assert 0 <= metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1] <= 1
    judged = positions.verdict(stored, c)
    assert judged["verdict"] == stored["verdict"] and judged["measured"] == stored["measured"]
    assert (run_dir.path / stored["figures"][0]).is_file()
    assert "| arch | task |" in stored["table"]


def test_same_config_and_seeds_give_the_same_numbers(smoke, tmp_path):
    c, _, stored = smoke
    c.unlock()
    c.archs = ("decoder",)
    c.encodings = ("none", "rope")
    again = positions.measure(c, experiment.RunDir(tmp_path))
    for e in c.encodings:
        assert again["arms"]["decoder"][e]["per_task"] == \
            stored["arms"]["decoder"][e]["per_task"]
