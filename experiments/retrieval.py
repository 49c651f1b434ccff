"""Retrieval by meaning: all-MiniLM-L6-v2 sentence embeddings vs BM25 and TF-IDF.

A few dozen short passages and two dozen questions from ``attnjax.data.english``; each
question names the passage that answers it and is phrased mostly with other words ("How do
I make a loaf at home?" for the bread recipe). Passages and questions are embedded with
attnjax's import of all-MiniLM-L6-v2 (mean pooling, L2 normalisation, as
sentence-transformers) and ranked by cosine similarity. The peers match shared words only
(``attnjax.analysis.lexical``): Okapi BM25 (Robertson & Zaragoza 2009; k1 and b in the
config) and TF-IDF cosine.

Per question: the reciprocal rank of the gold passage and whether it is ranked first, for
each method, and the question's lexical overlap with its gold passage (their TF-IDF
cosine). The rule compares MiniLM with BM25 question by question (paired bootstrap over
questions, ``attnjax.stats.paired_bootstrap``), on all questions and on the half with the
least word overlap, where only meaning can find the passage.

Then retrieve-then-generate (RAG; Lewis et al. 2020): SmolLM2-135M-Instruct answers each
question greedily through its chat template (a) without a passage, (b) with MiniLM's top
passage in the prompt and (c) with the gold passage (an oracle). An answer is correct when
it contains the question's gold answer phrases (``attnjax.data.english.ANSWERS``, written
from the gold passage; ``answer_matches``). The RAG part has its own pre-registered rule and
verdict, reported beside the retrieval verdict: the claim is about retrieval, and a
135M-parameter reader can fail to use a passage that was found by meaning. Without
SmolLM2 the retrieval part still runs and the RAG part is reported as skipped.

    python -m experiments.retrieval [--config configs/retrieval.py[:smoke]]
"""

from __future__ import annotations

import re

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, stats
from attnjax.analysis import lexical
from attnjax.data.english import ANSWERS, PASSAGES, QUERIES
from attnjax.train import sampling
from experiments import REGISTRY, _llm, _minilm

NAME = "retrieval"
CLAIM = REGISTRY[NAME].claim
METHODS = ("minilm", "bm25", "tfidf")
RULE = (
    "Per question, the reciprocal rank (RR) of the gold passage among all passages. Two "
    "parts, each on the paired-bootstrap 95% interval over questions of RR(MiniLM) - "
    "RR(BM25, k1={k1}, b={b}): (1) all questions, (2) the low-overlap questions (TF-IDF "
    "cosine with the gold passage at or below the {low_overlap_quantile:.0%} quantile). A part "
    "holds if the interval's lower end is above 0 and does not hold otherwise; the claim "
    "holds if both parts hold, does not hold if both do not, mixed otherwise. TF-IDF is "
    "reported beside, not judged. RAG part, with its own verdict that does not change the "
    "class above (the claim is about retrieval): SmolLM2-135M-Instruct answers each question "
    "greedily (chat template, at most {max_new_tokens} new tokens) without a passage and "
    "with MiniLM's top passage; an answer is correct when it contains, for each group of "
    "the question's gold answer phrases, one of them. The RAG part holds if the paired-"
    "bootstrap 95% interval over questions of accuracy(with the retrieved passage) - "
    "accuracy(without) has its lower end above 0, and does not hold otherwise; the gold "
    "passage (an oracle) is reported beside."
)


def rule(config) -> str:
    """The pre-registered rule with this config's thresholds."""
    return RULE.format(k1=config.bm25.k1, b=config.bm25.b,
                       low_overlap_quantile=config.low_overlap_quantile,
                       max_new_tokens=config.rag.max_new_tokens)


def reciprocal_ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``scores [Q, P]``, ``gold [Q]`` -> ``[Q]`` 1 / rank of the gold passage (ties: the
    gold passage is ranked after every passage with an equal score, the pessimistic
    reading, so a method that scores everything 0 gets no credit)."""
    gold_score = scores[np.arange(len(gold)), gold]
    return 1.0 / (scores >= gold_score[:, None]).sum(axis=1)


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    model = _minilm.load(config)
    queries = QUERIES[: config.num_queries or None]
    questions = [q for q, _ in queries]
    gold = np.array([g for _, g in queries])
    passages = list(PASSAGES)
    embedded = model.embed(passages + questions)
    tfidf = lexical.tfidf_vectors(passages + questions)
    scores = {
        "minilm": embedded[len(passages):] @ embedded[: len(passages)].T,
        "bm25": lexical.bm25_scores(questions, passages, k1=config.bm25.k1, b=config.bm25.b),
        "tfidf": tfidf[len(passages):] @ tfidf[: len(passages)].T,
    }
    rr = {m: reciprocal_ranks(scores[m], gold) for m in METHODS}
    overlap = scores["tfidf"][np.arange(len(gold)), gold]
    low = overlap <= np.quantile(overlap, config.low_overlap_quantile)
    for q, question in enumerate(questions):
        run_dir.log({"query": question, "gold": int(gold[q]), "overlap": float(overlap[q]),
                     "low_overlap": bool(low[q]), **{f"rr_{m}": float(rr[m][q]) for m in METHODS}})
    metrics = {}
    for subset, mask in (("all", np.ones_like(low)), ("low_overlap", low)):
        for m in METHODS:
            metrics[f"mrr_{m}_{subset}"] = stats.item_summary(rr[m][mask])
            metrics[f"hit1_{m}_{subset}"] = stats.item_summary(rr[m][mask] == 1.0)
        for peer in ("bm25", "tfidf"):
            metrics[f"rr_minilm_minus_{peer}_{subset}"] = _minilm.paired_summary(
                rr["minilm"][mask], rr[peer][mask])
    examples = []
    for question in config.show:
        similarity = embedded[: len(passages)] @ model.embed([question])[0]
        top = np.argsort(-similarity)[: config.top_k]
        examples.append({"query": question, "top": [
            {"passage": passages[i], "cosine": float(similarity[i])} for i in top]})
    numbers = {"model": str(model.path), "passages": len(passages), "queries": len(questions),
               "low_overlap_queries": int(low.sum()), "overlap": overlap.tolist(),
               "reciprocal_ranks": {m: rr[m].tolist() for m in METHODS},
               "metrics": metrics, "examples": examples}
    if config.rag.enabled:
        top = np.argmax(scores["minilm"], axis=1)
        try:
            rag = measure_rag(config, run_dir, questions, gold, top)
        except experiment.Skipped as e:
            rag = {"skipped": str(e)}
        numbers["rag"] = {k: v for k, v in rag.items() if k != "metrics"}
        metrics.update(rag.get("metrics", {}))
    return numbers


# --------------------------------------------------------------------------- RAG


def normalise(text: str) -> str:
    """Lower case, thousands separators dropped ("8,849" -> "8849"), every other run of
    non-alphanumeric characters one space, padded with spaces."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower())
    return " " + " ".join(re.findall(r"[a-z0-9]+", text)) + " "


def answer_matches(answer: str, groups) -> bool:
    """True when, for every group of alternative phrases, one of them occurs in ``answer``
    as whole words, optionally with a plural ending (``normalise`` applied to both:
    "Mammals." matches "mammal"; "70" does not match "7", nor "mammalian" "mammal")."""
    if not groups or any(not group for group in groups):
        raise ValueError(f"`groups` must be non-empty groups of phrases, got {groups!r}")
    text = normalise(answer)
    return all(any(re.search(" " + re.escape(normalise(phrase).strip()) + "(?:s|es)? ", text)
                   for phrase in group)
               for group in groups)


def chat_prompt(system: str, user: str) -> str:
    """SmolLM2's chat template (``tokenizer.chat_template`` of its GGUF) for one user turn,
    ending where the assistant's answer starts."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def rag_prompts(config, question: str, passages: dict[str, str | None]) -> dict[str, str]:
    """The prompt of each condition: ``None`` as the passage means no passage."""
    rag = config.rag
    return {name: chat_prompt(rag.system, rag.question_only.format(question=question)
                              if passage is None else
                              rag.with_passage.format(passage=passage, question=question))
            for name, passage in passages.items()}


def generate_answers(model, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers, one prompt at a time (prompts differ in length). The KV cache length
    is fixed for the whole list and prompts are padded to multiples of 64, so the 30-layer
    model compiles a handful of times, not once per prompt length."""
    ids = [model.tokenize(p) for p in prompts]
    cache_len = -(-(max(len(i) for i in ids) + max_new_tokens) // 64) * 64
    out = []
    for prompt in ids:
        new = sampling.generate(model.config, model.params, prompt, max_new_tokens,
                                temperature=0.0, stop_ids=model.eos_ids, cache_len=cache_len,
                                pad_multiple=64)
        new = [t for t in new if t not in model.eos_ids]
        out.append(model.decode(new).strip())
    return out


def measure_rag(config, run_dir: experiment.RunDir, questions: list[str], gold: np.ndarray,
                top: np.ndarray) -> dict:
    """SmolLM2's answers without a passage, with MiniLM's top passage ``top [Q]`` and with
    the gold passage; their accuracies and the paired differences. Raises
    ``experiment.Skipped`` (with the install command) when SmolLM2 is not installed."""
    model = _llm.load(ml_collections.ConfigDict({"model_path": config.rag.model_path}))
    conditions = ("none", "retrieved") + (("gold",) if config.rag.oracle else ())
    prompts, keys = [], []
    for q, question in enumerate(questions):
        passages = {"none": None, "retrieved": PASSAGES[top[q]], "gold": PASSAGES[gold[q]]}
        for name, prompt in rag_prompts(config, question,
                                        {c: passages[c] for c in conditions}).items():
            prompts.append(prompt)
            keys.append((q, name))
    generated = generate_answers(model, prompts, config.rag.max_new_tokens)
    answers = {c: [""] * len(questions) for c in conditions}
    for (q, name), text in zip(keys, generated, strict=True):
        answers[name][q] = text
    correct = {c: np.array([answer_matches(a, ANSWERS[question])
                            for a, question in zip(answers[c], questions, strict=True)], float)
               for c in conditions}
    records = []
    for q, question in enumerate(questions):
        record = {"rag_query": question, "gold": int(gold[q]), "retrieved": int(top[q]),
                  "retrieved_is_gold": bool(top[q] == gold[q]),
                  **{f"answer_{c}": answers[c][q] for c in conditions},
                  **{f"correct_{c}": bool(correct[c][q]) for c in conditions}}
        run_dir.log(record)
        records.append(record)
    # The echo control: a "reader" that copies the first max_new_tokens tokens of the
    # retrieved passage. The gold phrases come from the passages, so copying scores too;
    # this is how much of the with-passage accuracy copying alone would give.
    echo = [model.decode(model.tokenize(PASSAGES[top[q]])[: config.rag.max_new_tokens])
            for q in range(len(questions))]
    correct["echo_retrieved"] = np.array(
        [answer_matches(a, ANSWERS[question]) for a, question in zip(echo, questions,
                                                                     strict=True)], float)
    metrics = {f"rag_accuracy_{c}": stats.item_summary(correct[c]) for c in correct}
    metrics["rag_retrieved_minus_none"] = _minilm.paired_summary(correct["retrieved"],
                                                                 correct["none"])
    if "gold" in conditions:
        metrics["rag_gold_minus_retrieved"] = _minilm.paired_summary(correct["gold"],
                                                                     correct["retrieved"])
    return {"reader": str(model.path), "conditions": list(conditions),
            "retrieved_is_gold": float(np.mean(top == gold)),
            "examples": records[: config.rag.num_examples], "metrics": metrics}


def verdict(numbers: dict, config) -> dict:
    m = numbers["metrics"]
    parts = {subset: _minilm.interval_verdict(m[f"rr_minilm_minus_bm25_{subset}"], 0.0)
             for subset in ("all", "low_overlap")}
    cls = experiment.combine_verdicts(parts)
    fmt = stats.format_summary
    n_low, n_all = numbers["low_overlap_queries"], numbers["queries"]
    reasons = "; ".join(
        f"{'all ' + str(n_all) if s == 'all' else str(n_low) + ' low-overlap'} questions: "
        f"RR(MiniLM) - RR(BM25) {fmt(m[f'rr_minilm_minus_bm25_{s}'], '+.2f')} ({parts[s]})"
        for s in ("all", "low_overlap"))
    rag_text, rag_measured = rag_verdict(numbers)
    measured = (
        f"{n_all} questions over {numbers['passages']} passages, mean reciprocal rank "
        f"[95% interval over questions]: all-MiniLM-L6-v2 {fmt(m['mrr_minilm_all'], '.2f')}, "
        f"BM25 {fmt(m['mrr_bm25_all'], '.2f')}, TF-IDF {fmt(m['mrr_tfidf_all'], '.2f')}; "
        f"on the {n_low} questions with the least word overlap: MiniLM "
        f"{fmt(m['mrr_minilm_low_overlap'], '.2f')}, BM25 {fmt(m['mrr_bm25_low_overlap'], '.2f')}"
        f", TF-IDF {fmt(m['mrr_tfidf_low_overlap'], '.2f')}; top-1 MiniLM "
        f"{m['hit1_minilm_all']['mean']:.0%} vs BM25 {m['hit1_bm25_all']['mean']:.0%}"
        f"{rag_measured}"
    )
    return {"verdict": f"{cls}: {reasons} (paired bootstrap over questions; no seeds, a "
                       f"pretrained model); {rag_text}", "measured": measured}


def rag_verdict(numbers: dict) -> tuple[str, str]:
    """The RAG part's verdict text and its clause of ``measured`` (pure, like ``verdict``)."""
    rag = numbers.get("rag")
    if rag is None:
        return "RAG part not run (config.rag.enabled is false)", ""
    if "skipped" in rag:
        return f"RAG part skipped: {rag['skipped']}", ""
    m = numbers["metrics"]
    diff = m["rag_retrieved_minus_none"]
    holds = "holds" if diff["ci95"][0] > 0.0 else "does not hold"
    pct = lambda r: stats.format_summary(r, percent=True)  # noqa: E731
    pts = (f"{diff['mean'] * 100:+.0f} points [{diff['ci95'][0] * 100:+.0f}, "
           f"{diff['ci95'][1] * 100:+.0f}]")
    oracle = (f", with the gold passage {pct(m['rag_accuracy_gold'])}"
              if "rag_accuracy_gold" in m else "")
    if "rag_accuracy_echo_retrieved" in m:
        oracle += ("; copying the start of the retrieved passage (as many tokens as an "
                   f"answer may have) would score {pct(m['rag_accuracy_echo_retrieved'])}")
    measured = (
        f". RAG, SmolLM2-135M-Instruct's answer accuracy: without a passage "
        f"{pct(m['rag_accuracy_none'])}, with MiniLM's top passage (the gold one for "
        f"{rag['retrieved_is_gold']:.0%} of the questions) {pct(m['rag_accuracy_retrieved'])}"
        f"{oracle}")
    return (f"RAG part (own rule, not combined into the class) {holds}: accuracy with the "
            f"retrieved passage minus without {pts}"), measured


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> list[str]:
    figure = Figure(figsize=(6.5, 3.8))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    width = 0.27
    subsets = ("all", "low_overlap")
    for i, method in enumerate(METHODS):
        records = [numbers["metrics"][f"mrr_{method}_{s}"] for s in subsets]
        means = np.array([r["mean"] for r in records])
        errors = np.abs(np.array([r["ci95"] for r in records]).T - means)
        ax.bar(np.arange(len(subsets)) + (i - 1) * width, means, width, yerr=errors,
               capsize=3, label=method)
    ax.set(xticks=range(len(subsets)), ylim=(0, 1.05), ylabel="mean reciprocal rank",
           xticklabels=[f"all ({numbers['queries']})",
                        f"low word overlap ({numbers['low_overlap_queries']})"],
           title="which passage answers the question? (95% interval over questions)")
    ax.legend()
    figure.tight_layout()
    path = run_dir.figure_path("retrieval")
    figure.savefig(path, dpi=100)
    return [path.name]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    for example in numbers["examples"]:
        print(f"Q: {example['query']}")
        for hit in example["top"]:
            print(f"  {hit['cosine']:.3f}  {hit['passage']}")
    for example in numbers.get("rag", {}).get("examples", []):
        print(f"Q: {example['rag_query']} (retrieved passage {example['retrieved']}, gold "
              f"{example['gold']})")
        for name in numbers["rag"]["conditions"]:
            mark = "+" if example[f"correct_{name}"] else "-"
            print(f"  {mark} {name}: {example[f'answer_{name}']}")
    return {**numbers, "claim": CLAIM, "rule": rule(config),
            **verdict(numbers, config), "seeds": [],
            "headline": ["rr_minilm_minus_bm25_low_overlap", "mrr_minilm_all",
                         "rag_retrieved_minus_none" if "rag_retrieved_minus_none"
                         in numbers["metrics"] else "mrr_bm25_all"],
            "published": [], "published_note": (
                "none: the passages and questions are attnjax's own, so no paper reports "
                "this set"),
            "figures": plot(numbers, config, run_dir)}


if __name__ == "__main__":
    experiment.main(NAME, run)
