"""Does attention make the same word mean different things? ("river bank" vs "money bank")

For each polysemous word of ``attnjax.data.english.POLYSEMY`` (bank, bat, spring, crane,
bark, mouse, plant, match), several sentences use it in each of two senses. The real
all-MiniLM-L6-v2 (6 layers, 12 heads) encodes them; the word's vector (the mean of its word
pieces) is read after the embedding layer (layer 0: word + position + segment embedding,
the same word vector in every context up to position) and after each of the 6 attention
layers.

The control has context but no attention: the static input embeddings (layer 0) of the
word and of the ``control_window`` word pieces on each side of it, averaged (special tokens
left out). Bag-of-neighbours vectors like it already tell "bank" by "river" from "bank" by
"money"; the claim that *attention* makes the difference needs the model to separate the
senses better than that.

Per occurrence of a word (the items; no seeds, a pretrained model), in each representation:

* the silhouette of the occurrence among the word's occurrences (Rousseeuw 1987), with
  cosine distance: ``(b - a) / max(a, b)``, ``a`` the mean distance to the same sense's
  other occurrences, ``b`` to the other sense's; scale-free, so spaces compare;
* leave-one-out nearest-centroid sense accuracy (correct or not).

    python -m experiments.contextual_meaning [--config configs/contextual_meaning.py[:smoke]]
"""

from __future__ import annotations

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, stats
from attnjax.data.english import POLYSEMY
from experiments import REGISTRY, _minilm

NAME = "contextual_meaning"
CLAIM = REGISTRY[NAME].claim
RULE = (
    "Items: every occurrence of a polysemous word (no seeds; 95% intervals bootstrap over "
    "occurrences). MiniLM is read at its last layer (fixed in advance, no layer selection); "
    "the control averages the static input embeddings of the word and {control_window} word "
    "pieces on each side. Two parts: (1) separation: MiniLM's leave-one-out nearest-centroid "
    "sense accuracy, holds if the interval's lower end is above {min_sense_accuracy:.0%}; "
    "(2) attention beyond the control: the paired difference of per-occurrence silhouettes "
    "(cosine distance), MiniLM minus control, holds if the lower end is above 0. A part does "
    "not hold if the lower end is at or below its threshold; the claim holds if both parts "
    "hold, does not hold if both do not, mixed otherwise."
)


def rule(config) -> str:
    """The pre-registered rule with this config's thresholds."""
    return RULE.format(control_window=config.control_window,
                       min_sense_accuracy=config.min_sense_accuracy)


def occurrence_vectors(model, sentences: list[str], word: str, windows) -> dict:
    """The word's vector in each sentence: ``"layers"`` ``[L + 1, N, D]`` (mean of its
    pieces after the embedding layer and each attention layer) and, per window ``k`` of
    ``windows``, ``"control_k"`` ``[N, D]``: the layer-0 vectors of its pieces and of ``k``
    pieces on each side (inside ``[CLS] ... [SEP]``), averaged."""
    encoded = model.encode(sentences, attention=True)
    layers = []
    controls = {k: [] for k in windows}
    for i, pieces in enumerate(encoded.pieces):
        span = model.word_positions(pieces, word)
        layers.append(encoded.hidden_states[:, i, span].mean(axis=1))
        last_real = int(encoded.valid[i].sum()) - 2  # [SEP] is at last_real + 1
        for k in windows:
            window = np.arange(max(1, span[0] - k), min(last_real, span[-1] + k) + 1)
            controls[k].append(encoded.hidden_states[0, i, window].mean(axis=0))
    return {"layers": np.stack(layers, axis=1),
            **{f"control_{k}": np.stack(v) for k, v in controls.items()}}


def _cosine_distances(v: np.ndarray) -> np.ndarray:
    unit = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return 1.0 - unit @ unit.T


def silhouettes(vectors: np.ndarray, senses: np.ndarray) -> np.ndarray:
    """``[N]`` silhouette of each occurrence (cosine distance, two senses, each with at
    least two occurrences): ``(b - a) / max(a, b)``."""
    distances = _cosine_distances(vectors)
    same = senses[:, None] == senses[None, :]
    off_diagonal = ~np.eye(len(senses), dtype=bool)
    a = (distances * (same & off_diagonal)).sum(1) / (same & off_diagonal).sum(1)
    b = (distances * ~same).sum(1) / (~same).sum(1)
    return (b - a) / np.maximum(np.maximum(a, b), 1e-12)


def loo_sense_correct(vectors: np.ndarray, senses: np.ndarray) -> np.ndarray:
    """``[N]`` whether each occurrence is nearer (cosine) to the centroid of its own sense's
    other occurrences than to the other sense's centroid."""
    correct = np.zeros(len(senses), bool)
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    for i in range(len(senses)):
        rest = np.arange(len(senses)) != i
        centroids = np.stack([vectors[rest & (senses == s)].mean(axis=0) for s in (0, 1)])
        centroids /= np.linalg.norm(centroids, axis=-1, keepdims=True)
        correct[i] = int(np.argmax(centroids @ unit[i])) == senses[i]
    return correct


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    model = _minilm.load(config)
    pairs = [p for p in POLYSEMY if not config.words or p[0].word in config.words]
    windows = sorted({config.control_window, *config.control_windows})
    k = config.sentences_per_sense or None
    per_item = {"silhouette": {}, "correct": {}}
    words, item_word = [], []
    for first, second in pairs:
        sentences = list(first.sentences[:k]) + list(second.sentences[:k])
        senses = np.array([0] * len(first.sentences[:k]) + [1] * len(second.sentences[:k]))
        vectors = occurrence_vectors(model, sentences, first.word, windows)
        spaces = {f"layer_{i}": v for i, v in enumerate(vectors["layers"])}
        spaces.update({name: v for name, v in vectors.items() if name != "layers"})
        for name, v in spaces.items():
            per_item["silhouette"].setdefault(name, []).extend(silhouettes(v, senses))
            per_item["correct"].setdefault(name, []).extend(loo_sense_correct(v, senses))
        words.append({"word": first.word, "senses": [first.sense, second.sense],
                      "occurrences": len(sentences)})
        item_word += [first.word] * len(sentences)
        run_dir.log({"word": first.word, **{
            f"silhouette_{name}": float(np.mean(silhouettes(v, senses)))
            for name, v in spaces.items()}})
    per_item = {key: {name: np.asarray(v, np.float64) for name, v in d.items()}
                for key, d in per_item.items()}
    last = f"layer_{model.config.num_layers}"
    control = f"control_{config.control_window}"
    s, c = per_item["silhouette"], per_item["correct"]
    metrics = {
        "sense_accuracy_minilm": stats.item_summary(c[last]),
        "sense_accuracy_control": stats.item_summary(c[control]),
        "sense_accuracy_layer0": stats.item_summary(c["layer_0"]),
        "silhouette_minilm": stats.item_summary(s[last]),
        "silhouette_control": stats.item_summary(s[control]),
        "silhouette_layer0": stats.item_summary(s["layer_0"]),
        "silhouette_minilm_minus_control": _minilm.paired_summary(s[last], s[control]),
        "sense_accuracy_minilm_minus_control": _minilm.paired_summary(c[last], c[control]),
    }
    by_space = {name: {"silhouette": stats.item_summary(s[name]),
                       "sense_accuracy": stats.item_summary(c[name])} for name in s}
    return {"model": str(model.path), "words": words, "occurrences": len(item_word),
            "num_layers": model.config.num_layers, "control_windows": windows,
            "item_word": item_word,
            "per_item": {key: {n: v.tolist() for n, v in d.items()} for key, d in per_item.items()},
            "by_space": by_space, "metrics": metrics}


def verdict(numbers: dict, config) -> dict:
    m = numbers["metrics"]
    parts = {
        "separation": _minilm.interval_verdict(m["sense_accuracy_minilm"],
                                               config.min_sense_accuracy),
        "beyond_control": _minilm.interval_verdict(m["silhouette_minilm_minus_control"], 0.0),
    }
    cls = experiment.combine_verdicts(parts)
    fmt = stats.format_summary
    last, k = numbers["num_layers"], config.control_window
    measured = (
        f"{numbers['occurrences']} occurrences of {len(numbers['words'])} two-sense words, "
        f"all-MiniLM-L6-v2 [95% interval over occurrences]: sense accuracy (leave-one-out "
        f"nearest centroid) {fmt(m['sense_accuracy_layer0'], percent=True)} at the embedding "
        f"layer, {fmt(m['sense_accuracy_minilm'], percent=True)} after layer {last}, "
        f"{fmt(m['sense_accuracy_control'], percent=True)} for the no-attention control "
        f"(static embeddings averaged over +-{k} pieces); silhouette "
        f"{fmt(m['silhouette_layer0'], '.2f')} / {fmt(m['silhouette_minilm'], '.2f')} / "
        f"{fmt(m['silhouette_control'], '.2f')}, MiniLM minus control "
        f"{fmt(m['silhouette_minilm_minus_control'], '+.2f')}"
    )
    reasons = (
        f"sense accuracy after layer {last} {fmt(m['sense_accuracy_minilm'], percent=True)} vs "
        f"the {config.min_sense_accuracy:.0%} bar ({parts['separation']}); silhouette MiniLM "
        f"minus the +-{k}-piece static-embedding average "
        f"{fmt(m['silhouette_minilm_minus_control'], '+.2f')} ({parts['beyond_control']}) "
        f"(intervals over occurrences; no seeds, a pretrained model)"
    )
    return {"verdict": f"{cls}: {reasons}", "measured": measured}


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> list[str]:
    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    layers = np.arange(numbers["num_layers"] + 1)
    for ax, key, label in zip(axes, ("silhouette", "sense_accuracy"),
                              ("silhouette (cosine distance)", "sense accuracy (LOO)"),
                              strict=True):
        records = [numbers["by_space"][f"layer_{i}"][key] for i in layers]
        means = np.array([r["mean"] for r in records])
        lo, hi = np.array([r["ci95"] for r in records]).T
        ax.plot(layers, means, "k-o", label="all-MiniLM-L6-v2")
        ax.fill_between(layers, lo, hi, color="k", alpha=0.15)
        for k in numbers["control_windows"]:
            r = numbers["by_space"][f"control_{k}"][key]
            style = "-" if k == config.control_window else ":"
            ax.axhline(r["mean"], ls=style, lw=1.2 if style == "-" else 0.8,
                       color=f"C{numbers['control_windows'].index(k)}",
                       label=(f"control +-{k} pieces" if k < 100 else "control: whole sentence")
                       + (" (rule)" if style == "-" else ""))
        ax.set(xlabel="layer (0 = static input embeddings)", ylabel=label)
        ax.legend(fontsize=7)
    axes[0].set_title("do a word's occurrences cluster by sense? (95% interval)")
    axes[1].set_title("lines: static embeddings averaged over a window")
    figure.tight_layout()
    path = run_dir.figure_path("contextual_meaning")
    figure.savefig(path, dpi=100)
    return [path.name]


def table(numbers: dict) -> str:
    lines = [f"{'representation':<16}{'silhouette':>24}{'sense accuracy':>28}"]
    for name, r in numbers["by_space"].items():
        lines.append(f"{name:<16}{stats.format_summary(r['silhouette'], '.3f'):>24}"
                     f"{stats.format_summary(r['sense_accuracy'], percent=True):>28}")
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    print(table(numbers))
    return {**numbers, "claim": CLAIM, "rule": rule(config), **verdict(numbers, config),
            "seeds": [], "headline": ["silhouette_minilm_minus_control", "sense_accuracy_minilm",
                                      "sense_accuracy_control"],
            "published": [], "published_note": (
                "none: the sentences are attnjax's own, so no paper reports this set"),
            "figures": plot(numbers, config, run_dir)}


if __name__ == "__main__":
    experiment.main(NAME, run)
