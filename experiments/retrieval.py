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

    python -m experiments.retrieval [--config configs/retrieval.py[:smoke]]
"""

from __future__ import annotations

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, stats
from attnjax.analysis import lexical
from attnjax.data.english import PASSAGES, QUERIES
from experiments import REGISTRY, _minilm

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
    "reported beside, not judged."
)


def rule(config) -> str:
    """The pre-registered rule with this config's thresholds."""
    return RULE.format(k1=config.bm25.k1, b=config.bm25.b,
                       low_overlap_quantile=config.low_overlap_quantile)


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
    return {"model": str(model.path), "passages": len(passages), "queries": len(questions),
            "low_overlap_queries": int(low.sum()), "overlap": overlap.tolist(),
            "reciprocal_ranks": {m: rr[m].tolist() for m in METHODS},
            "metrics": metrics, "examples": examples}


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
    measured = (
        f"{n_all} questions over {numbers['passages']} passages, mean reciprocal rank "
        f"[95% interval over questions]: all-MiniLM-L6-v2 {fmt(m['mrr_minilm_all'], '.2f')}, "
        f"BM25 {fmt(m['mrr_bm25_all'], '.2f')}, TF-IDF {fmt(m['mrr_tfidf_all'], '.2f')}; "
        f"on the {n_low} questions with the least word overlap: MiniLM "
        f"{fmt(m['mrr_minilm_low_overlap'], '.2f')}, BM25 {fmt(m['mrr_bm25_low_overlap'], '.2f')}"
        f", TF-IDF {fmt(m['mrr_tfidf_low_overlap'], '.2f')}; top-1 MiniLM "
        f"{m['hit1_minilm_all']['mean']:.0%} vs BM25 {m['hit1_bm25_all']['mean']:.0%}"
    )
    return {"verdict": f"{cls}: {reasons} (paired bootstrap over questions; no seeds, a "
                       f"pretrained model)", "measured": measured}


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
    return {**numbers, "claim": CLAIM, "rule": rule(config),
            **verdict(numbers, config), "seeds": [],
            "headline": ["rr_minilm_minus_bm25_low_overlap", "mrr_minilm_all", "mrr_bm25_all"],
            "published": [], "published_note": (
                "none: the passages and questions are attnjax's own, so no paper reports "
                "this set"),
            "figures": plot(numbers, config, run_dir)}


if __name__ == "__main__":
    experiment.main(NAME, run)
