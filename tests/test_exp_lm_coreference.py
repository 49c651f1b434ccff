"""experiments/lm_coreference.py: the pieces without the model (attention to candidates on a
hand-made array, token spans, Trinh & Le substitution, the vectorised label-swap null
against a loop, group-resampled intervals, the verdict on synthetic numbers), and the smoke
run of the shared tour where SmolLM2-135M-Instruct is installed: the results contract, a
verdict that recomputes from the stored numbers, and causality (a pronoun cannot tell apart
twins that read the same up to it)."""

import json

import numpy as np
import pytest

from attnjax import experiment, pretrained
from experiments import _llm
from experiments import lm_coreference as lmc
from tests.helpers import tour_run

NAME = "lm_coreference"


# --------------------------------------------------------------------------- attention


def test_candidate_weight_is_the_largest_over_its_tokens():
    rows = np.zeros((2, 3, 6))  # [L, H, S]
    rows[0, 0, [1, 2, 4]] = [0.1, 0.5, 0.3]
    rows[1, 2, [1, 2, 4]] = [0.2, 0.05, 0.6]
    out = lmc.pronoun_to_candidates(rows, [[1, 2], [4]])
    assert out.shape == (2, 3, 2)
    np.testing.assert_allclose(out[0, 0], [0.5, 0.3])
    np.testing.assert_allclose(out[1, 2], [0.2, 0.6])
    np.testing.assert_allclose(out[0, 1], [0.0, 0.0])


def test_candidate_without_tokens_or_outside_the_keys_is_refused():
    with pytest.raises(ValueError, match="candidate 1"):
        lmc.pronoun_to_candidates(np.zeros((1, 1, 4)), [[0], []])
    with pytest.raises(ValueError, match="candidate 0"):
        lmc.pronoun_to_candidates(np.zeros((1, 1, 4)), [[4], [1]])
    with pytest.raises(ValueError, match=r"\[L, H, S\]"):
        lmc.pronoun_to_candidates(np.zeros((4, 4)), [[0], [1]])


def test_picks_correct_counts_a_tie_as_half():
    scores = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.3]])
    np.testing.assert_allclose(lmc.picks_correct(scores, np.array([0, 1, 1])), [1, 0, 0.5])
    with pytest.raises(ValueError, match="N = len"):
        lmc.picks_correct(scores, np.array([0, 1]))


def test_candidate_spans_are_whole_words_and_tokens_overlap_them():
    text = "The trophy doesn't fit into the brown suitcase because"
    assert lmc.candidate_spans(text, "the brown suitcase") == [(32, 46)]
    assert lmc.candidate_spans(text, "The trophy") == [(4, 10)]
    assert lmc.candidate_spans("Tom met Tomas and tom.", "Tom") == [(0, 3), (18, 21)]
    # Byte-level BPE offsets include the leading space: " brown" is (31, 37).
    offsets = [(0, 3), (3, 10), (27, 31), (31, 37), (37, 42), (42, 46), (46, 54)]
    assert lmc.overlapping_tokens(offsets, [(32, 46)]) == [3, 4, 5]
    assert lmc.overlapping_tokens(offsets, [(4, 10)]) == [1]


def _item(txt1, pronoun, txt2, answers, correct=0, group=0):
    return lmc.Item(0, group, txt1, pronoun, txt2, answers, correct)


def test_substitution_keeps_case_and_possessives_and_marks_where_the_rest_starts():
    text, boundary = lmc.substitute(
        _item("The trophy doesn't fit into the brown suitcase because", "it", "is too large.",
              ("The trophy", "the brown suitcase")), 0)
    assert text == "The trophy doesn't fit into the brown suitcase because the trophy is too large."
    assert text[boundary:] == " is too large."
    possessive = _item("Jim signaled the barman and gestured toward", "his", "empty glass",
                       ("Jim", "the barman"))
    assert lmc.substitute(possessive, 1)[0].endswith("toward the barman's empty glass")
    already = _item("Emma's mother had died long ago, and", "her", "education ...",
                    ("Emma's", "Emma's mother"))
    assert "and Emma's education" in lmc.substitute(already, 0)[0]
    capital = _item("Look! There is a minnow swimming right below that duck!", "It",
                    "had better get away to safety fast!", ("a minnow", "that duck"))
    assert "duck! A minnow had better" in lmc.substitute(capital, 0)[0]


def test_groups_join_consecutive_sentences_sharing_a_candidate():
    schemas = [{"answers": ["The trophy", "the suitcase"]}, {"answers": ["trophy", "suitcase"]},
               {"answers": ["Joan", "Susan"]}, {"answers": ["a minnow", "that duck"]},
               {"answers": ["a shark", "that duck"]}]
    np.testing.assert_array_equal(lmc.group_ids(schemas), [0, 0, 1, 2, 2])


def test_twins_that_read_the_same_up_to_the_pronoun_are_found():
    items = [_item("The trophy didn't fit because", "it", "was big.", ("t", "s"), 0, 0),
             _item("The trophy didn't fit because", "it", "was small.", ("t", "s"), 1, 0),
             _item("The firemen arrived after the police because", "they", "x", ("f", "p"), 0, 1),
             _item("The firemen arrived before the police because", "they", "x", ("f", "p"), 1, 1),
             _item("Alone here", "it", "x", ("a", "b"), 0, 2)]
    np.testing.assert_array_equal(lmc.same_text_to_pronoun(items), [True, False, False])


# --------------------------------------------------------------------------- selection


def _planted(num_groups=30, num_heads=12, good=7, seed=0):
    """Twin pairs with flipped answers; head ``good`` is right on every sentence, the others
    right at random."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(num_groups), 2)
    correct = rng.integers(0, 2, (2 * num_groups, num_heads)).astype(float)
    correct[:, good] = 1.0
    return correct, group


def _null_by_loop(correct, group, selection, draws, seed):
    """The label-swap null the slow way: swap each group's labels (c -> 1 - c), re-choose
    the best head on the selection half, score it on the held-out half."""
    swaps = np.random.default_rng(seed).random((draws, len(selection))) < 0.5
    out = []
    for swap in swaps:
        swapped = np.where(swap[group][:, None], 1.0 - correct, correct)
        out.append(lmc.select_and_score(swapped, group, selection)["heldout_correct"].mean())
    return np.array(out)


def test_vectorised_label_swap_null_equals_the_loop():
    correct, group = _planted(num_groups=17, num_heads=9)
    correct[::3] = 0.5  # ties too
    group = np.concatenate([group, [17, 17, 17]])  # a group of three
    correct = np.concatenate([correct, np.full((3, 9), 1.0)])
    selection = lmc.split_groups(18, seed=3)
    fast = lmc.label_swap_null(correct, group, selection, draws=64, seed=5)
    np.testing.assert_allclose(fast, _null_by_loop(correct, group, selection, 64, 5),
                               atol=1e-12)


def test_a_planted_head_is_chosen_and_beats_the_null():
    correct, group = _planted()
    selection = lmc.split_groups(30, seed=0)
    chosen = lmc.select_and_score(correct, group, selection)
    assert chosen["best"] == 7 and chosen["heldout_correct"].mean() == 1.0
    assert chosen["heldout"].sum() == 2 * (30 - 30 // 2)
    null = lmc.label_swap_null(correct, group, selection, draws=500, seed=0)
    assert 0.5 < null.mean() < 0.8 and np.quantile(null, 0.95) < 1.0


def test_split_keeps_groups_whole_and_is_fixed_by_its_seed():
    a, b = lmc.split_groups(11, seed=0), lmc.split_groups(11, seed=0)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 5
    with pytest.raises(ValueError, match="2 schema groups"):
        lmc.split_groups(1, seed=0)


def test_cluster_interval_resamples_groups_and_keeps_the_sentence_mean():
    values = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    group = np.array([0, 0, 1, 1, 1, 2, 2])
    summary = lmc.cluster_summary(values, group)
    assert summary["mean"] == pytest.approx(4 / 7)
    assert summary["n"] == 3 and summary["sentences"] == 7
    lo, hi = summary["ci95"]
    assert 0.0 <= lo <= summary["mean"] <= hi <= 1.0
    # Groups whose sentences all score 1/2 (a blind head on flipped twins) leave no spread.
    flat = lmc.cluster_summary(np.tile([1.0, 0.0], 5), np.repeat(np.arange(5), 2))
    assert flat["mean"] == 0.5 and flat["ci95"] == [0.5, 0.5]


# --------------------------------------------------------------------------- verdict


def _numbers(held_mean, held_lo, quantile):
    metric = lambda mean, lo=None: {"mean": mean, "ci95": [mean - 0.05 if lo is None else lo,  # noqa: E731
                                                           mean + 0.05], "n": 60,
                                    "sentences": 120}
    metrics = {key: metric(0.5) for key in (
        "random_head_heldout_accuracy", "random_end_head_heldout_accuracy",
        "heldout_end_head_accuracy", "lm_full_accuracy_all", "lm_partial_accuracy_all",
        "lm_full_accuracy_heldout", "lm_partial_accuracy_heldout")}
    metrics.update({key: metric(0.0) for key in (
        "head_minus_lm_full_heldout", "head_minus_lm_partial_heldout",
        "end_head_minus_lm_full_heldout", "end_head_minus_lm_partial_heldout")})
    metrics["heldout_head_accuracy"] = metric(held_mean, held_lo)
    query = {"chosen_head": {"layer": 3, "head": 4, "selection_accuracy": 0.6},
             "null": {"draws": 100, "mean": 0.51, "quantile": quantile}}
    return {"sentences": 240, "groups": 120, "head_test_sentences": 236,
            "heldout_sentences": 120, "groups_same_text_to_pronoun": 80,
            "queries": {"pronoun": query, "end": query}, "metrics": metrics}


@pytest.mark.parametrize("held_mean, held_lo, quantile, want", [
    (0.70, 0.60, 0.55, "claim holds"),
    (0.70, 0.48, 0.55, "mixed"),  # beyond the null but the interval reaches chance
    (0.56, 0.52, 0.60, "mixed"),  # above chance but within selection luck
    (0.50, 0.45, 0.55, "claim does not hold here"),
])
def test_verdict_follows_the_two_parts(held_mean, held_lo, quantile, want):
    config = lmc_config("smoke")
    out = lmc.verdict(_numbers(held_mean, held_lo, quantile), config)
    assert experiment.verdict_class(out["verdict"]) == want.replace(" here", "")
    assert out["verdict"].startswith(want)
    assert "layer 3 head 4" in out["measured"]


def lmc_config(variant):
    return experiment.load_config(f"configs/{NAME}.py:{variant}")


def test_rule_is_filled_from_the_config():
    config = lmc_config("full")
    text = lmc.rule(config)
    assert "{" not in text and "1000 label swaps" in text and "270 heads" in text
    assert "first 12 schema groups" in lmc.rule(lmc_config("smoke"))


# --------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    if not pretrained.smollm2_available():
        pytest.skip(f"SmolLM2-135M-Instruct not installed ({_llm.INSTALL})")
    return tour_run(tour_smoke, NAME)


def test_smoke_results_keep_the_contract(smoke):
    config, run_dir, results = smoke
    assert results["seeds"] == [] and results["rule"] == lmc.rule(config)
    assert results["headline"] == lmc.HEADLINE and results["published_note"]
    for key in results["headline"]:
        metric = results["metrics"][key]
        assert metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1] and metric["n"] >= 4
    assert results["published"] == []  # a subset of WSC273 has no published figure
    for figure in results["figures"]:
        assert (run_dir.path / figure).read_bytes()[:4] == b"\x89PNG"
    assert len(results["figures"]) == 3


def test_smoke_verdict_recomputes_from_the_stored_numbers(smoke):
    config, _, results = smoke
    again = lmc.verdict(results, config)
    assert again == {"verdict": results["verdict"], "measured": results["measured"]}


def test_smoke_counts_and_shapes(smoke):
    config, run_dir, results = smoke
    assert results["groups"] == config.num_groups
    assert results["sentences"] == len(run_dir.records())
    for query in lmc.QUERIES:
        assert np.array(results["queries"][query]["selection_accuracy"]).shape == (30, 9)
        assert len(results["queries"][query]["null"]["values"]) == config.null_draws
    assert [e["index"] for e in results["examples"]] == list(config.example_indices)


def test_smoke_pronoun_cannot_tell_apart_twins_that_read_the_same_up_to_it(smoke):
    # Causal attention: the pronoun's row is computed before the word that flips the answer,
    # so on such a twin pair any head is right on exactly one of the two sentences.
    _, run_dir, _ = smoke
    by_group = {}
    for record in run_dir.records():
        if record["chosen_pronoun_head_correct"] is not None:
            by_group.setdefault(record["group"], []).append(record)
    checked = 0
    for records in by_group.values():
        if (len(records) == 2 and {r["correct"] for r in records} == {0, 1}
                and len({r["text_to_pronoun"] for r in records}) == 1):
            total = sum(r["chosen_pronoun_head_correct"] for r in records)
            assert total == pytest.approx(1.0), json.dumps(records, indent=1)
            checked += 1
    assert checked >= 1
