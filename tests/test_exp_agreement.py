"""experiments/agreement: attractor counting, the nearest-noun baseline, the distance bins,
the dev-chosen head and offset on a fake oracle model (no ../shared), and the smoke run from
the shared smoke tour where MiniLM and UD EWT are present."""

import types

import numpy as np
import pytest

from attnjax import experiment, pretrained
from attnjax.data import conllu
from experiments import REGISTRY, agreement
from tests.helpers import tour_run

needs_minilm_and_ud = pytest.mark.skipif(
    not pretrained.minilm_available() or not conllu.ud_ewt_path("dev").is_file(),
    reason="needs all-MiniLM-L6-v2 and ../shared/data/ud_english_ewt")

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


def config(**overrides):
    c = experiment.load_config("configs/agreement.py:smoke")
    c.unlock()
    c.update(overrides)
    return c


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
    records = agreement.arc_records(OracleModel(s), s, config())
    assert records["heads"] == (1, 2) and records["skipped"] == 0
    assert records["found"].shape == (12, 2) and records["found"][:, 0].all()
    np.testing.assert_array_equal(records["attractors"], [1, 0, 0] * 4)
    out = agreement.score(records, records, config(), len(s))
    assert out["head"] == {"layer": 0, "head": 0} and out["dev_accuracy"] == 1.0
    # Subject - verb offsets are -5, -6, -1: -5 and -1 tie on dev, the nearer wins.
    assert out["offset"] == -1
    cells = out["cells"]
    assert cells["all"]["n"] == 12 and cells["all"]["head"]["mean"] == 1.0
    assert cells["all"]["nearest_noun"]["mean"] == pytest.approx(1 / 3)  # only "who"
    assert cells["distance 5+"]["n"] == 8 and cells["distance 1"]["n"] == 4
    assert cells["distance 2"] == {"n": 0}
    attracted = cells[">=1 attractor"]
    assert attracted["n"] == 4 and attracted["nearest_noun"]["mean"] == 0.0
    assert attracted["head_minus_nearest_noun"]["mean"] == 1.0
    numbers = {**out, "metrics": {}}
    judged = agreement.verdict(numbers, config(min_arcs=3))
    assert judged["verdict"].startswith("claim holds")
    judged = agreement.verdict(numbers, config(min_arcs=5))  # 4 attracted arcs: too few
    assert judged["verdict"].startswith("mixed")


@needs_minilm_and_ud
def test_smoke_run_keeps_the_contract_and_its_verdict_recomputes(tour_smoke):
    c, run_dir, stored = tour_run(tour_smoke, "agreement")
    assert stored["claim"] == REGISTRY["agreement"].claim
    assert stored["seeds"] == [] and stored["rule"] == agreement.rule(c)
    assert stored["layers"] == 6 and stored["heads_per_layer"] == 12
    assert stored["dev_accuracy"] >= max(max(r) for r in stored["dev_accuracy_per_head"])
    for c_ in stored["cells"].values():
        if c_["n"]:
            for key in ("head", "offset", "nearest_noun"):
                lo, hi = c_[key]["ci95"]
                assert 0 <= lo <= c_[key]["mean"] <= hi <= 1
    judged = agreement.verdict(stored, c)
    assert judged["verdict"] == stored["verdict"] and judged["measured"] == stored["measured"]
    assert experiment.verdict_class(stored["verdict"]) in experiment.VERDICTS
    assert (run_dir.path / stored["figures"][0]).is_file()
    assert stored["headline"] and set(stored["headline"]) <= set(stored["metrics"])
