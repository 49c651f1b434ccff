"""The pieces of the translation experiment that need no training: IBM Model 1 against
hand-computed EM counts, the three-way split and train-only vocabularies of
``attnjax.data.translation.load_task``, parameter matching, and the pre-registered rule."""

import copy

import numpy as np
import pytest

from attnjax import analysis, experiment
from attnjax.analysis.alignment import IBMModel1
from attnjax.data.vocab import UNK_ID
from experiments import translation as exp

# Koehn 2010 ("Statistical Machine Translation", sec. 4.2.3) runs EM on this corpus.
TOY_CORPUS = [
    (("das", "Haus"), ("the", "house")),
    (("das", "Buch"), ("the", "book")),
    (("ein", "Buch"), ("a", "book")),
]


def test_ibm1_first_em_iteration_matches_hand_computed_probabilities():
    # Uniform start t = 1/4; each target word splits its count evenly over the two source
    # words of its sentence, so e.g. das collects the:1, house:.5, book:.5 of total 2.
    model = IBMModel1.train(TOY_CORPUS, iterations=1, null=False)
    expected = {("the", "das"): 0.5, ("house", "das"): 0.25, ("book", "das"): 0.25,
                ("the", "Buch"): 0.25, ("book", "Buch"): 0.5, ("a", "Buch"): 0.25,
                ("a", "ein"): 0.5, ("book", "ein"): 0.5,
                ("the", "Haus"): 0.5, ("house", "Haus"): 0.5, ("a", "das"): 0.0}
    for (f, e), p in expected.items():
        assert model.prob(f, e) == pytest.approx(p, abs=1e-12), (f, e)
    # Every column is a distribution over the target words.
    np.testing.assert_allclose(model.translation[:, 1:].sum(0), 1.0)


@pytest.mark.parametrize("null", [False, True])
def test_ibm1_em_converges_to_the_word_alignment_of_the_toy_corpus(null):
    model = IBMModel1.train(TOY_CORPUS, iterations=30, null=null)
    assert model.prob("the", "das") > 0.95 and model.prob("book", "Buch") > 0.95
    assert model.links(("das", "Haus"), ("the", "house")) == {(0, 0), (1, 1)}
    assert model.links(("ein", "Buch"), ("a", "book")) == {(0, 0), (1, 1)}
    # A reordered pair is aligned by word identity, not position.
    assert model.links(("Buch", "das"), ("the", "book")) == {(1, 0), (0, 1)}


def test_ibm1_words_never_seen_in_training_get_no_link():
    model = IBMModel1.train(TOY_CORPUS, iterations=10)
    assert model.links(("das", "Auto"), ("the", "car")) == {(0, 0)}
    assert model.prob("car", "Auto") == 0.0


def test_ibm1_rejects_a_corpus_without_usable_pairs():
    with pytest.raises(ValueError, match="non-empty"):
        IBMModel1.train([((), ("a",))])


@pytest.fixture(scope="module")
def config():
    return experiment.load_config("configs/translation.py:smoke")


@pytest.fixture(scope="module")
def task(config):
    return exp.translation.load_task(config, 0)


def test_load_task_splits_three_ways_without_overlap(task):
    train = {s for s, _ in task["train_pairs"]}
    dev = {s for s, _ in task["dev_pairs"]}
    test = {s for s, _ in task["test_pairs"]}
    assert not (train & dev) and not (train & test) and not (dev & test)
    assert task["num_dev"] == len(task["dev_pairs"]) == len(task["dev_golds"]) > 0
    assert task["num_test"] == len(task["test_pairs"]) == len(task["golds"]) > 0
    for key in ("train", "test", "test_pairs", "golds", "source_vocab", "target_vocab",
                "num_train", "num_test", "dev", "dev_pairs", "dev_golds"):
        assert key in task
    assert task["dev"]["source"].shape[0] == task["num_dev"]


def test_vocabularies_hold_train_words_only_and_unknown_test_words_become_unk(task):
    train_source = {w for s, _ in task["train_pairs"] for w in s}
    train_target = {w for _, t in task["train_pairs"] for w in t}
    assert set(task["source_vocab"].tokens[4:]) == train_source
    assert set(task["target_vocab"].tokens[4:]) == train_target
    test = task["test"]
    unk = int((test["source"] == UNK_ID).sum() + (test["target_out"] == UNK_ID).sum())
    assert unk == task["num_unknown_test_words"]


def test_each_seed_draws_its_own_data(config):
    a = exp.translation.load_task(config, 0)["train_pairs"]
    b = exp.translation.load_task(config, 1)["train_pairs"]
    assert a != b
    assert exp.translation.load_task(config, 0)["train_pairs"] == a  # deterministic


def test_rnn_hidden_size_is_matched_to_the_transformer_parameter_count(config, task):
    sv, tv = len(task["source_vocab"]), len(task["target_vocab"])
    _, target, _ = exp.build_model("transformer", config, sv, tv, task["train"])
    for name in ("gru_attention", "gru"):
        _, count, hidden = exp.build_model(name, config, sv, tv, task["train"], target)
        assert abs(count / target - 1) <= config.rnn.match_tolerance, (name, count, target)
        assert hidden % config.rnn.hidden_step == 0


def _numbers(exact, head, diagonal, ibm1):
    """Hand-made numbers of len(exact) seeds for the verdict."""
    per_seed = [{"seed": i, "test_exact_match": e, "test_token_accuracy": e,
                 "alignment": {"chosen_test_aer": h}}
                for i, (e, h) in enumerate(zip(exact, head, strict=True))]
    baselines = [{"diagonal_aer": d, "ibm1_aer": b}
                 for d, b in zip(diagonal, ibm1, strict=True)]
    return {"task": "toy", "scan_split": None, "baselines": baselines,
            "arms": {"transformer": {"per_seed": per_seed}}}


def test_rule_needs_accuracy_and_both_margins_in_every_seed(config):
    holds = _numbers([0.99] * 2, [0.05, 0.06], [0.35, 0.35], [0.20, 0.20])
    assert exp.verdict(holds, config)["verdict"].startswith("claim holds: holds in 2 of 2 seeds")
    # A head that beats the diagonal but not IBM-1 by the margin fails that seed.
    mixed = _numbers([0.99] * 2, [0.05, 0.19], [0.35, 0.35], [0.20, 0.20])
    assert exp.verdict(mixed, config)["verdict"].startswith("mixed: holds in 1 of 2 seeds")
    # Perfect alignment does not save a transformer below the accuracy bar.
    inaccurate = _numbers([0.90] * 2, [0.0, 0.0], [0.35, 0.35], [0.20, 0.20])
    v = exp.verdict(inaccurate, config)["verdict"]
    assert v.startswith("claim does not hold here: holds in 0 of 2 seeds")
    assert "accuracy >= 98% in 0 of 2" in v


def test_scan_rule_is_accuracy_only(config):
    scan = copy.deepcopy(config)
    scan.unlock()
    scan.task = "scan"
    numbers = _numbers([0.995, 0.97], [0, 0], [0, 0], [0, 0])
    numbers["task"], numbers["scan_split"] = "scan", "simple"
    del numbers["baselines"]
    for entry in numbers["arms"]["transformer"]["per_seed"]:
        del entry["alignment"]
    scan.rule.min_exact_match = 0.99
    v = exp.verdict(numbers, scan)["verdict"]
    assert v.startswith("mixed: holds in 1 of 2 seeds") and "no gold alignment" in v
    assert "alignment" in exp.rule_text(scan) and "SCAN" in exp.rule_text(scan)


@pytest.mark.parametrize("variant, overall_best, best", [
    ("scan_simple", 0.997, 0.998), ("scan_length", 0.138, 0.208), ("scan_addjump", 0.0008, 0.012)])
def test_scan_reports_lake_and_baroni_beside_our_arms(variant, overall_best, best):
    # Their two figures per split (overall-best network, top architecture for the split),
    # from the paper's text; ours are the arms' test exact match.
    config = experiment.load_config(f"configs/translation.py:{variant}")
    metrics = {f"{arm}_exact_match": {"mean": 0.5 + i / 10}
               for i, arm in enumerate(config.models)}
    rows = exp.published(config, metrics)
    assert [r["value"] for r in rows] == [overall_best, best]
    assert all(r["source"].startswith("Lake & Baroni 2018") for r in rows)
    assert rows[0]["ours"] == "transformer 0.500; gru_attention 0.600"
    assert exp.published(experiment.load_config("configs/translation.py:tour"), metrics) == []


def test_diagonal_links_are_monotonic_and_cover_every_target_word():
    links = analysis.diagonal_links(5, 3)
    assert links == {(0, 0), (2, 1), (4, 2)}


def test_metrics_score_heads_only_for_arms_with_attention():
    numbers = _numbers([0.99] * 2, [0.05, 0.06], [0.35, 0.35], [0.20, 0.20])
    numbers["arms"]["gru"] = {"per_seed": [
        {"seed": i, "test_exact_match": 0.5, "test_token_accuracy": 0.9} for i in range(2)]}
    metrics = exp.metrics_of(numbers)
    assert metrics["gru_exact_match"]["per_seed"] == [0.5, 0.5]
    assert "gru_head_aer" not in metrics and "transformer_head_aer" in metrics
    assert metrics["ibm1_aer"]["mean"] == pytest.approx(0.20)
