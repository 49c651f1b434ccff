"""Does attention make the same word mean different things? ("river bank" vs "money bank")

For each polysemous word of ``attnjax.data.english.POLYSEMY`` (bank, bat, spring, crane,
bark, mouse, plant, match), several sentences use it in each of two senses. The real
all-MiniLM-L6-v2 (6 layers, 12 heads) encodes them; the word's vector (the mean of its word
pieces) is read after the embedding layer (layer 0: word + position + segment embedding,
identical across contexts up to position) and after each of the 6 attention layers.
Per layer and word:

* cosine similarity of the word's vectors between sentences of the same sense and between
  sentences of different senses, and their gap;
* leave-one-out nearest-centroid accuracy of telling the two senses apart.

The claim holds if the vectors start alike (small gap at layer 0) and separate by sense
after the attention layers (positive gap for every word, high sense accuracy).

    python -m experiments.contextual_meaning [--config configs/contextual_meaning.py[:smoke]]
"""

from __future__ import annotations

import itertools

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment
from attnjax.data.english import POLYSEMY
from experiments import REGISTRY, _minilm

NAME = "contextual_meaning"
CLAIM = REGISTRY[NAME].claim


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def word_vectors(model, sentences: list[str], word: str) -> np.ndarray:
    """``[L + 1, N, D]``: the word's vector (mean of its pieces) after every layer."""
    encoded = model.encode(sentences, attention=True)
    vectors = []
    for i, pieces in enumerate(encoded.pieces):
        positions = model.word_positions(pieces, word)
        vectors.append(encoded.hidden_states[:, i, positions].mean(axis=1))
    return np.stack(vectors, axis=1)


def similarities(vectors: np.ndarray, senses: np.ndarray) -> dict:
    """Per layer: mean same-sense and other-sense cosine, and LOO nearest-centroid accuracy."""
    layers, n, _ = vectors.shape
    same, other, accuracy = [], [], []
    for layer in range(layers):
        v = vectors[layer]
        pairs = list(itertools.combinations(range(n), 2))
        cos = {(i, j): _cosine(v[i], v[j]) for i, j in pairs}
        same.append(float(np.mean([c for (i, j), c in cos.items() if senses[i] == senses[j]])))
        other.append(float(np.mean([c for (i, j), c in cos.items() if senses[i] != senses[j]])))
        correct = 0
        for i in range(n):
            rest = np.arange(n) != i
            centroids = [v[rest & (senses == s)].mean(axis=0) for s in (0, 1)]
            guess = int(np.argmax([_cosine(v[i], c) for c in centroids]))
            correct += guess == senses[i]
        accuracy.append(correct / n)
    gap = [s - o for s, o in zip(same, other, strict=True)]
    return {"same_sense": same, "other_sense": other, "gap": gap, "sense_accuracy": accuracy}


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    model = _minilm.load(config)
    pairs = [p for p in POLYSEMY if not config.words or p[0].word in config.words]
    per_word = {}
    for first, second in pairs:
        k = config.sentences_per_sense or None
        sentences = list(first.sentences[:k]) + list(second.sentences[:k])
        senses = np.array([0] * len(first.sentences[:k]) + [1] * len(second.sentences[:k]))
        vectors = word_vectors(model, sentences, first.word)
        stats = similarities(vectors, senses)
        per_word[first.word] = {"senses": [first.sense, second.sense], **stats}
        run_dir.log({"word": first.word, **stats})
    layers = len(next(iter(per_word.values()))["gap"])
    mean = {key: [float(np.mean([w[key][layer] for w in per_word.values()]))
                  for layer in range(layers)]
            for key in ("same_sense", "other_sense", "gap", "sense_accuracy")}
    results = {"model": str(model.path), "words": per_word, "mean": mean,
               "figures": [plot(per_word, mean, run_dir)]}
    results.update(verdict_of(per_word, mean, config))
    print(table(per_word, mean))
    return results


def verdict_of(per_word: dict, mean: dict, config) -> dict:
    last = len(mean["gap"]) - 1
    separated = [w for w, s in per_word.items() if s["gap"][last] > 0]
    best_layer = int(np.argmax(mean["gap"]))
    measured = (
        f"{len(per_word)} words x 2 senses, all-MiniLM-L6-v2: same-sense vs other-sense cosine "
        f"of the word's vector {mean['same_sense'][0]:.3f} vs {mean['other_sense'][0]:.3f} at "
        f"the embedding layer (gap {mean['gap'][0]:+.3f}), {mean['same_sense'][last]:.3f} vs "
        f"{mean['other_sense'][last]:.3f} after layer {last} (gap {mean['gap'][last]:+.3f}; "
        f"largest gap {mean['gap'][best_layer]:+.3f} at layer {best_layer}); sense accuracy "
        f"(leave-one-out nearest centroid) {mean['sense_accuracy'][0]:.0%} -> "
        f"{mean['sense_accuracy'][last]:.0%}; gap > 0 at the last layer for "
        f"{len(separated)}/{len(per_word)} words"
    )
    static = abs(mean["gap"][0]) < config.static_gap
    contextual = (len(separated) == len(per_word)
                  and mean["sense_accuracy"][last] >= config.min_sense_accuracy)
    if static and contextual:
        verdict = ("claim holds: the same word starts with (almost) the same vector and the "
                   "attention layers pull its occurrences apart by sense")
    elif contextual or len(separated) > len(per_word) / 2:
        verdict = ("mixed: the vectors separate by sense for most words, but "
                   + ("not for all, or not reliably enough to classify"
                      if not contextual else "they already differ at the embedding layer"))
    else:
        verdict = "claim does not hold: the word's vectors do not separate by sense"
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


def plot(per_word: dict, mean: dict, run_dir: experiment.RunDir) -> str:
    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    layers = np.arange(len(mean["gap"]))
    for word, stats in per_word.items():
        left.plot(layers, stats["gap"], lw=1, alpha=0.6, label=word)
    left.plot(layers, mean["gap"], "k-o", lw=2, label="mean")
    left.axhline(0, color="gray", lw=0.8)
    left.set(xlabel="layer (0 = embeddings)", ylabel="cosine: same sense - other sense",
             title="how far the two senses of a word drift apart")
    left.legend(fontsize=7, ncol=2)
    right.plot(layers, mean["same_sense"], "-o", label="same sense")
    right.plot(layers, mean["other_sense"], "-o", label="other sense")
    right2 = right.twinx()
    right2.plot(layers, mean["sense_accuracy"], "k--", label="sense accuracy (LOO)")
    right2.set_ylim(0, 1.05)
    right.set(xlabel="layer", ylabel="mean cosine between occurrences",
              title="all-MiniLM-L6-v2, mean over words")
    right.legend(loc="lower left", fontsize=8)
    right2.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path = run_dir.figure_path("contextual_meaning")
    figure.savefig(path, dpi=100)
    return path.name


def table(per_word: dict, mean: dict) -> str:
    layers = len(mean["gap"])
    lines = ["gap (same - other sense cosine) by layer; last column: sense accuracy at the end",
             f"{'word':<8}" + "".join(f"{f'L{i}':>8}" for i in range(layers)) + f"{'acc':>6}"]
    for word, s in [*per_word.items(), ("mean", mean)]:
        lines.append(f"{word:<8}" + "".join(f"{g:>+8.3f}" for g in s["gap"])
                     + f"{s['sense_accuracy'][-1]:>6.0%}")
    return "\n".join(lines)


if __name__ == "__main__":
    experiment.main(NAME, run)
