"""experiments/agreement: the pure helpers of both parts against hand-worked answers (the
attractor counting on an inline CoNLL-U sample, the structure-blind baselines, the
subject-over-attractors test), the dev-chosen head and offset on an oracle model, the rule,
and the smoke run from the shared smoke tour (contract, verdict recomputed from the stored
numbers, same config + seed -> same numbers)."""

import types

import numpy as np
import pytest

from attnjax import experiment, pretrained
from attnjax.data import conllu, coreference
from experiments import REGISTRY, agreement
from tests.helpers import tour_run

SMOKE = "configs/agreement.py:smoke"
# Without MiniLM part B is skipped and the run still finishes; with MiniLM but without the
# treebank the run stops on the reader's error, so there is no smoke run to read.
needs_ud_if_minilm = pytest.mark.skipif(
    pretrained.minilm_available() and not conllu.ud_ewt_path("dev").is_file(),
    reason="all-MiniLM-L6-v2 is installed but ../shared/data/ud_english_ewt is not")

# "The keys to the cabinet are here ." and "Bob , who saw them , runs ." (tagged by hand).
SAMPLE = """\
# sent_id = a1
# text = The keys to the cabinet are here .
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tkeys\tkey\tNOUN\tNNS\tNumber=Plur\t7\tnsubj\t_\t_
3\tto\tto\tADP\tIN\t_\t5\tcase\t_\t_
4\tthe\tthe\tDET\tDT\t_\t5\tdet\t_\t_
5\tcabinet\tcabinet\tNOUN\tNN\tNumber=Sing\t2\tnmod\t_\t_
6\tare\tbe\tAUX\tVBP\tNumber=Plur\t7\tcop\t_\t_
7\there\there\tADV\tRB\t_\t0\troot\t_\t_
8\t.\t.\tPUNCT\t.\t_\t7\tpunct\t_\t_

# sent_id = a2
# text = Bob , who saw them , runs .
1\tBob\tBob\tPROPN\tNNP\tNumber=Sing\t7\tnsubj\t_\t_
2\t,\t,\tPUNCT\t,\t_\t4\tpunct\t_\t_
3\twho\twho\tPRON\tWP\t_\t4\tnsubj\t_\t_
4\tsaw\tsee\tVERB\tVBD\t_\t1\tacl:relcl\t_\t_
5\tthem\tthey\tPRON\tPRP\tNumber=Plur\t4\tobj\t_\t_
6\t,\t,\tPUNCT\t,\t_\t4\tpunct\t_\t_
7\truns\trun\tVERB\tVBZ\tNumber=Sing\t0\troot\t_\t_
8\t.\t.\tPUNCT\t.\t_\t7\tpunct\t_\t_

"""


def config(**bars):
    c = experiment.load_config(SMOKE)
    c.unlock()
    c.bars.update(bars)
    return c


# --------------------------------------------------------------------------- part B helpers


def test_subject_arcs_attractors_and_the_nearest_noun():
    keys, bob = conllu.parse(SAMPLE)
    assert agreement.subject_arcs(keys) == [(1, 6)]
    assert agreement.subject_arcs(bob) == [(0, 6), (2, 3)]
    # "cabinet" (Sing) between "keys" (Plur) and the verb: one attractor, and it is what
    # the structure-blind nearest-noun baseline picks.
    assert agreement.attractors(keys, 1, 6) == 1
    assert agreement.nearest_noun(keys, 6) == 4
    # "them" is a plural pronoun, not a noun: no attractor; but the nearest nominal.
    assert agreement.attractors(bob, 0, 6) == 0
    assert agreement.nearest_noun(bob, 6) == 4 and agreement.nearest_noun(bob, 3) == 2
    assert agreement.nearest_noun(keys, 0) == -1
    # A subject without Number has no attractors.
    assert agreement.attractors(bob, 2, 3) == 0


def test_distance_bins():
    assert [agreement.distance_bin(d) for d in (1, 2, 3, 4, 5, 40)] == [
        "1", "2", "3-4", "3-4", "5+", "5+"]
    with pytest.raises(ValueError):
        agreement.distance_bin(0)


class FakeEncoding:
    def __init__(self, text):
        self.tokens = text.split()
        self.ids = list(range(len(self.tokens)))
        starts, pos = [], 0
        for token in self.tokens:
            pos = text.index(token, pos)
            starts.append(pos)
            pos += len(token)
        self.offsets = [(s, s + len(t)) for s, t in zip(starts, self.tokens, strict=True)]


class OracleModel:
    """Word = piece; head 0 of layer 0 attends from every word to its first nsubj
    dependent (itself if none), head 1 to the previous word."""

    def __init__(self, sentences):
        self.by_text = {s.text: s for s in sentences}
        self.tokenizer = types.SimpleNamespace(encode=FakeEncoding)

    def encode(self, texts, attention=True):
        n = max(len(FakeEncoding(t).ids) for t in texts)
        weights = np.zeros((1, len(texts), 2, n, n))
        for b, text in enumerate(texts):
            s = self.by_text[text]
            for i in range(len(s)):
                subj = [j for j in range(len(s)) if s.deprels[j] == "nsubj"
                        and s.head_index(j) == i]
                weights[0, b, 0, i, subj[0] if subj else i] = 1
                weights[0, b, 1, i, max(i - 1, 0)] = 1
        return types.SimpleNamespace(attention=weights,
                                     hidden_states=np.zeros((2, len(texts), n, 1)))


def test_the_oracle_head_is_chosen_and_beats_both_baselines():
    s = conllu.parse(SAMPLE) * 4
    c = config()
    records = agreement.arc_records(OracleModel(s), s, c.pretrained)
    assert records["heads"] == (1, 2) and records["skipped"] == 0
    assert records["found"].shape == (12, 2) and records["found"][:, 0].all()
    np.testing.assert_array_equal(records["attractors"], [1, 0, 0] * 4)
    out = agreement.score(records, records, c.pretrained, len(s))
    assert out["head"] == {"layer": 0, "head": 0} and out["dev_accuracy"] == 1.0
    # Subject - verb offsets are -5, -6, -1, a third each: the nearest of the tie wins.
    assert out["offset"] == -1
    cells = out["cells"]
    assert cells["all"]["n"] == 12 and cells["all"]["head"]["mean"] == 1.0
    assert cells["all"]["nearest_noun"]["mean"] == pytest.approx(1 / 3)  # only "who"
    assert cells["distance 5+"]["n"] == 8 and cells["distance 1"]["n"] == 4
    assert cells["distance 2"] == {"n": 0}
    attracted = cells[">=1 attractor"]
    assert attracted["n"] == 4 and attracted["nearest_noun"]["mean"] == 0.0
    assert attracted["head_minus_nearest_noun"]["mean"] == 1.0
    assert out["condition_heads"][">=1 attractor"]["head"] == {"layer": 0, "head": 0}
    # Both tested conditions: the head finds every subject, both baselines none.
    assert agreement.part_b_verdict(out, config(min_arcs=3))[0] == "claim holds"
    # Too few arcs with an attractor (4 < 5) is no evidence: that leg fails, part B mixed.
    assert agreement.part_b_verdict(out, config(min_arcs=5))[0] == "mixed"
    assert agreement.part_b_verdict(out, config(min_arcs=9))[0] == "claim does not hold here"


# --------------------------------------------------------------------------- part A helpers


def _example(tokens, attractors, plural=False):
    words = tuple(tokens.split())
    return coreference.AgreementExample(words, 2, attractors, plural, ("falls", "fall"))


def test_encode_marks_the_prediction_position_subject_and_attractors():
    task = coreference.AgreementTask(0)
    vocab = task.vocabulary()
    examples = [_example("the old man suddenly", ()),
                _example("the old men who lived next to the park suddenly", (8,), True)]
    arrays = agreement.encode(examples, vocab, 12)
    assert arrays["tokens"].shape == (2, 12) and (arrays["tokens"][0, 4:] == 0).all()
    np.testing.assert_array_equal(arrays["verb"], [3, 9])  # "suddenly", before the verb
    np.testing.assert_array_equal(arrays["label"], [0, 1])
    np.testing.assert_array_equal(arrays["subject"], [2, 2])
    np.testing.assert_array_equal(arrays["attractors"], [[-1], [8]])
    np.testing.assert_array_equal(arrays["num_attractors"], [0, 1])
    with pytest.raises(ValueError, match="shorter"):
        agreement.encode(examples, vocab, 5)


def test_structure_blind_baselines_are_fooled_by_every_attractor():
    subject = np.array([2, 2, 2])
    attractors = np.array([[-1, -1], [8, -1], [8, 11]])
    np.testing.assert_array_equal(agreement.most_recent_noun(subject, attractors), [2, 8, 11])
    base = agreement.structure_blind_baselines(
        {"subject": subject, "attractors": attractors, "num_attractors": np.array([0, 1, 2])})
    np.testing.assert_array_equal(base["most_recent_noun"], [1, 0, 0])
    np.testing.assert_allclose(base["random_noun"], [1, 1 / 2, 1 / 3])


def test_subject_must_strictly_outweigh_every_attractor():
    # [L=1, N=4, H=2, S=5]; subject at 0, attractors at 2 and 3 (sentence 0 has none).
    rows = np.zeros((1, 4, 2, 5))
    rows[0, 1, 0] = [0.5, 0, 0.3, 0.2, 0]  # beats both
    rows[0, 2, 0] = [0.4, 0, 0.1, 0.5, 0]  # loses to the second attractor
    rows[0, 3, 0] = [0.3, 0, 0.3, 0.1, 0]  # a tie is not a win
    rows[0, :, 1, 4] = 1.0  # head 1 looks elsewhere: the subject ties the attractors at 0
    attractors = np.array([[-1, -1], [2, 3], [2, 3], [2, 3]])
    wins = agreement.subject_outweighs_attractors(rows, np.zeros(4, int), attractors)
    assert wins.shape == (4, 1, 2)
    np.testing.assert_array_equal(wins[:, 0, 0], [True, True, False, False])
    np.testing.assert_array_equal(wins[:, 0, 1], [True, False, False, False])
    with pytest.raises(ValueError, match="rows"):
        agreement.subject_outweighs_attractors(rows[0], np.zeros(4, int), attractors)


def _part_a(margins):
    per_seed = [{"chosen_head": {"layer": 0, "head": 0},
                 "by_attractors": [{"attractors": 0, "accuracy": 1.0, "n": 10,
                                    "most_recent_noun": 1.0, "random_noun": 1.0},
                                   {"attractors": 1, "accuracy": 0.9, "n": 10,
                                    "head_subject_over_attractors": 0.5 + m,
                                    "most_recent_noun": 0.0, "random_noun": 0.5}],
                 "with_attractors": {"accuracy": 0.9, "head": 0.5 + m, "baseline": 0.5,
                                     "most_recent_noun": 0.0, "random_noun": 0.5,
                                     "head_minus_baseline": m}} for m in margins]
    return {"seeds": list(range(len(margins))), "train_attractors": [0, 1],
            "per_seed": per_seed}


def test_part_a_counts_seeds_over_the_margin():
    c = config(trained_margin=0.3)
    assert agreement.part_a_verdict(_part_a([0.4, 0.45]), c)[0] == "claim holds"
    assert agreement.part_a_verdict(_part_a([0.4, 0.1]), c)[0] == "mixed"
    cls, text = agreement.part_a_verdict(_part_a([0.1, 0.29]), c)
    assert cls == "claim does not hold here" and "0 of 2 seeds" in text


def test_without_minilm_the_verdict_is_part_a_and_says_so():
    numbers = {"seeds": [0, 1], "part_a": _part_a([0.4, 0.45]),
               "part_b": {"skipped": "all-MiniLM-L6-v2 is not installed"}}
    judged = agreement.verdict(numbers, config(trained_margin=0.3))
    assert judged["verdict"].startswith("claim holds (part A only")
    assert "not installed" in judged["verdict"] and "part B skipped" in judged["measured"]


def _cell(n, head_minus_offset_low, head_minus_noun_low):
    pct = {"mean": 0.5, "ci95": [0.4, 0.6]}
    return {"n": n, "head": pct, "offset": pct, "nearest_noun": pct,
            "head_minus_offset": {"mean": 0.0, "ci95": [head_minus_offset_low, 0.9]},
            "head_minus_nearest_noun": {"mean": 0.0, "ci95": [head_minus_noun_low, 0.9]}}


def test_part_b_tests_each_condition_against_its_registered_baseline_and_margin():
    c = config(distance_margin=0.10, attractor_margin=0.0, min_arcs=20)
    # Distance 5+ is judged against the offset with a 10-point margin (the nearest-noun
    # difference is not part of that leg); attractors against the nearest noun above 0.
    numbers = {"head": {"layer": 1, "head": 2}, "offset": -1,
               "cells": {"distance 5+": _cell(30, 0.11, -0.5),
                         ">=1 attractor": _cell(30, -0.5, 0.01)}}
    assert agreement.part_b_verdict(numbers, c)[0] == "claim holds"
    numbers["cells"]["distance 5+"] = _cell(30, 0.09, 0.9)
    cls, text = agreement.part_b_verdict(numbers, c)
    assert cls == "mixed" and "+9.0% vs 10%" in text
    numbers["cells"][">=1 attractor"] = _cell(19, 0.9, 0.9)
    cls, text = agreement.part_b_verdict(numbers, c)
    assert cls == "claim does not hold here" and "only 19 test arcs" in text


# --------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "agreement")


@needs_ud_if_minilm
def test_smoke_run_keeps_the_contract_and_its_verdict_recomputes(smoke):
    c, run_dir, stored = smoke
    experiment.check_results("agreement", stored, run_dir)
    assert stored["claim"] == REGISTRY["agreement"].claim
    assert stored["rule"] == agreement.rule(c)
    assert stored["seeds"] == list(c.seeds) == [0, 1]
    for metric in stored["metrics"].values():
        assert len(metric["per_seed"]) == 2
        lo, hi = metric["ci95"]
        assert lo <= metric["mean"] <= hi
    assert set(stored["headline"]) <= set(stored["metrics"])
    judged = agreement.verdict(stored, c)
    assert judged["verdict"] == stored["verdict"] and judged["measured"] == stored["measured"]
    assert experiment.verdict_class(stored["verdict"]) in experiment.VERDICTS
    assert (run_dir.path / stored["figures"][0]).is_file()
    b = stored["part_b"]
    if "skipped" not in b:
        assert b["layers"] == 6 and b["heads_per_layer"] == 12
        assert b["dev_accuracy"] == max(max(r) for r in b["dev_accuracy_per_head"])
        for cell in b["cells"].values():
            for key in ("head", "offset", "nearest_noun") if cell["n"] else ():
                lo, hi = cell[key]["ci95"]
                assert 0 <= lo <= cell[key]["mean"] <= hi <= 1


@needs_ud_if_minilm
def test_same_config_and_seeds_give_the_same_part_a_numbers(smoke, tmp_path):
    c, _, stored = smoke
    again = agreement.part_a(c, experiment.RunDir(tmp_path))
    for fresh, old in zip(again["per_seed"], stored["part_a"]["per_seed"], strict=True):
        assert fresh["chosen_head"] == old["chosen_head"]
        assert fresh["by_attractors"] == old["by_attractors"]
        assert fresh["with_attractors"] == old["with_attractors"]
