"""Retrieval by meaning: all-MiniLM-L6-v2 sentence embeddings vs bag-of-words.

A few dozen short passages and two dozen questions from ``attnjax.data.english``; each
question names the passage that answers it and is phrased mostly with other words ("How do
I make a loaf at home?" for the bread recipe). Passages and questions are embedded with
attnjax's import of all-MiniLM-L6-v2 (mean pooling, L2 normalisation, as
sentence-transformers) and ranked by cosine similarity; the peer is TF-IDF bag-of-words
cosine over the same texts, which can only match shared words. Reported: top-1 and top-k
accuracy and mean reciprocal rank of each, and the ranked passages for a few questions.

    python -m experiments.retrieval [--config configs/retrieval.py[:smoke]]
"""

from __future__ import annotations

import re
from collections import Counter

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment
from attnjax.data.english import PASSAGES, QUERIES
from experiments import REGISTRY, _minilm

NAME = "retrieval"
CLAIM = REGISTRY[NAME].claim


def bag_of_words(texts: list[str]) -> np.ndarray:
    """``[N, V]`` L2-normalised TF-IDF vectors (lower-cased words, smooth idf)."""
    docs = [Counter(re.findall(r"[a-z0-9]+", t.lower())) for t in texts]
    vocab = sorted(set().union(*docs))
    index = {w: i for i, w in enumerate(vocab)}
    df = Counter(w for d in docs for w in d)
    idf = np.log((1 + len(docs)) / (1 + np.array([df[w] for w in vocab]))) + 1.0
    matrix = np.zeros((len(docs), len(vocab)))
    for row, doc in enumerate(docs):
        for word, count in doc.items():
            matrix[row, index[word]] = count * idf[index[word]]
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def rank_metrics(scores: np.ndarray, gold: np.ndarray, k: int) -> dict:
    """``scores [Q, P]``: top-1, top-k accuracy and mean reciprocal rank of the gold passage."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.array([int(np.nonzero(order[q] == gold[q])[0][0]) + 1 for q in range(len(gold))])
    return {"top1": float(np.mean(ranks == 1)), f"top{k}": float(np.mean(ranks <= k)),
            "mrr": float(np.mean(1.0 / ranks)), "ranks": ranks.tolist()}


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    model = _minilm.load(config)
    queries = QUERIES[: config.num_queries or None]
    questions = [q for q, _ in queries]
    gold = np.array([g for _, g in queries])
    passages = list(PASSAGES)
    embedded = model.embed(passages + questions)
    dense = embedded[len(passages):] @ embedded[: len(passages)].T
    sparse_vectors = bag_of_words(passages + questions)
    sparse = sparse_vectors[len(passages):] @ sparse_vectors[: len(passages)].T
    methods = {"minilm": rank_metrics(dense, gold, config.top_k),
               "bag_of_words": rank_metrics(sparse, gold, config.top_k)}
    for q, question in enumerate(questions):
        run_dir.log({"query": question, "gold": int(gold[q]),
                     **{m: r["ranks"][q] for m, r in methods.items()}})
    examples = []
    for question in config.show:
        vector = model.embed([question])[0]
        similarity = embedded[: len(passages)] @ vector
        top = np.argsort(-similarity)[: config.top_k]
        examples.append({"query": question, "top": [
            {"passage": passages[i], "cosine": float(similarity[i])} for i in top]})
        print(f"Q: {question}")
        for i in top:
            print(f"  {similarity[i]:.3f}  {passages[i]}")
    results = {"model": str(model.path), "passages": len(passages), "queries": len(questions),
               "methods": methods, "examples": examples,
               "figures": [plot(methods, config, run_dir)]}
    results.update(verdict_of(results, config))
    return results


def verdict_of(results: dict, config) -> dict:
    dense, sparse = results["methods"]["minilm"], results["methods"]["bag_of_words"]
    k = config.top_k
    measured = (
        f"{results['queries']} questions over {results['passages']} passages: all-MiniLM-L6-v2 "
        f"(attnjax import) top-1 {dense['top1']:.0%}, top-{k} {dense[f'top{k}']:.0%}, MRR "
        f"{dense['mrr']:.2f}; TF-IDF bag-of-words top-1 {sparse['top1']:.0%}, top-{k} "
        f"{sparse[f'top{k}']:.0%}, MRR {sparse['mrr']:.2f}"
    )
    margin = dense["top1"] - sparse["top1"]
    if dense["top1"] >= config.min_top1 and margin >= config.min_margin:
        verdict = (f"claim holds: the embeddings find the answering passage for "
                   f"{dense['top1']:.0%} of questions, {margin:.0%} more than word overlap")
    elif margin > 0:
        verdict = (f"mixed: the embeddings beat word overlap by {margin:.0%} top-1, short of "
                   f"the {config.min_top1:.0%} / +{config.min_margin:.0%} bar")
    else:
        verdict = "claim does not hold: word overlap retrieves as well as the embeddings"
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


def plot(methods: dict, config, run_dir: experiment.RunDir) -> str:
    figure = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    keys = ["top1", f"top{config.top_k}", "mrr"]
    width = 0.38
    for i, (name, metrics) in enumerate(methods.items()):
        ax.bar(np.arange(len(keys)) + (i - 0.5) * width, [metrics[k] for k in keys], width,
               label=name)
    ax.set(xticks=range(len(keys)), xticklabels=keys, ylim=(0, 1.05),
           title="which passage answers the question?")
    ax.legend()
    figure.tight_layout()
    path = run_dir.figure_path("retrieval")
    figure.savefig(path, dpi=100)
    return path.name


if __name__ == "__main__":
    experiment.main(NAME, run)
