"""Does a verb's attention find its subject across distance and distracting nouns? Linzen
et al. 2016 ("Assessing the ability of LSTMs to learn syntax-sensitive dependencies") on
real annotated text, read off a pretrained model's attention.

Items: the ``nsubj`` arcs of UD English EWT (dev: 2,001 sentences, test: 2,077; gold trees)
whose subject (the dependent) precedes its verb (the head). For every head of
all-MiniLM-L6-v2 (6 x 12) the head "finds" the subject when the word the verb attends to
most (word-level attention, ``attnjax.analysis.words``) is the subject. Each arc has

* a distance, verb index - subject index, binned 1, 2, 3-4, 5+;
* an attractor count: nouns and proper nouns strictly between subject and verb whose
  ``Number`` feature is set and differs from the subject's (set) ``Number`` (0 vs >= 1).

The best head is chosen on dev (all such arcs) and scored on test overall, per distance bin
and per attractor condition, against two baselines on the same arcs: the best fixed offset
(always the word ``k`` to the verb's left or right, ``k`` chosen on dev) and the nearest
preceding noun / proper noun / pronoun (structure-blind, the Linzen-style heuristic an
attractor fools). 95% intervals are cluster bootstraps over test sentences
(``attnjax.stats.ratio_summary``; differences are paired, per sentence).

Out of scope for this round: Linzen et al.'s trained-model part (training a model on
number prediction and testing it with attractors); only a pretrained model's attention on
real text is measured here.

    python -m experiments.agreement [--config configs/agreement.py[:tour|smoke]]
"""

from __future__ import annotations

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, stats
from attnjax.analysis import words as word_level
from attnjax.data import conllu
from experiments import REGISTRY, _minilm

NAME = "agreement"
CLAIM = REGISTRY[NAME].claim
NOUNS = ("NOUN", "PROPN")
NOMINALS = ("NOUN", "PROPN", "PRON")
DISTANCE_BINS = (("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5+", 5, 10 ** 9))
ATTRACTOR_CONDITIONS = ("0 attractors", ">=1 attractor")
BASELINES = ("offset", "nearest_noun")
RULE = (
    "Items: UD English EWT nsubj arcs whose subject precedes its verb; found = the verb's "
    "most-attended word (word-level attention) is its subject. The MiniLM head is chosen on "
    "dev (all such arcs), scored on test; baselines on the same arcs: the best fixed offset "
    "(k in [-{max_offset}, {max_offset}] \\ {{0}}, chosen on dev) and the nearest preceding "
    "noun/proper noun/pronoun. 95% intervals are cluster bootstraps over test sentences of "
    "per-sentence paired differences. Part 1 (across distance): in the 5+ distance bin the "
    "head's accuracy minus the fixed offset's has interval lower end > "
    "{distance_margin:.0%}. Part 2 (across attractors): among arcs with >= 1 attractor (a "
    "noun between subject and verb whose Number differs from the subject's) the head's "
    "accuracy minus the nearest-noun baseline's has lower end > {attractor_margin:.0%}. A "
    "part with fewer than {min_arcs} test arcs does not hold (no evidence). The claim holds "
    "if both parts hold, does not hold if neither does, mixed otherwise."
)


def rule(config) -> str:
    """The pre-registered rule with this config's thresholds."""
    return RULE.format(max_offset=config.max_offset, distance_margin=config.distance_margin,
                       attractor_margin=config.attractor_margin, min_arcs=config.min_arcs)


def subject_arcs(sentence: conllu.Sentence) -> list[tuple[int, int]]:
    """``(subject, verb)`` word indices of every nsubj arc whose subject precedes the verb
    (``nsubj`` exactly: ``nsubj:pass`` and other subtypes are left out)."""
    return [(i, sentence.head_index(i)) for i in range(len(sentence))
            if sentence.deprels[i] == "nsubj" and 0 <= i < sentence.head_index(i)]


def attractors(sentence: conllu.Sentence, subject: int, verb: int) -> int:
    """Nouns and proper nouns strictly between ``subject`` and ``verb`` whose ``Number`` is
    set and differs from the subject's (0 if the subject has no ``Number``)."""
    number = sentence.feature(subject, "Number")
    if number is None:
        return 0
    return sum(1 for i in range(subject + 1, verb)
               if sentence.upos[i] in NOUNS
               and sentence.feature(i, "Number") not in (None, number))


def nearest_noun(sentence: conllu.Sentence, verb: int) -> int:
    """The nearest word before ``verb`` tagged noun, proper noun or pronoun; -1 if none."""
    for i in range(verb - 1, -1, -1):
        if sentence.upos[i] in NOMINALS:
            return i
    return -1


def distance_bin(distance: int) -> str:
    for label, lo, hi in DISTANCE_BINS:
        if lo <= distance <= hi:
            return label
    raise ValueError(f"distance must be >= 1, got {distance}")


def arc_records(model, sentences, config) -> dict:
    """Every subject-before-verb nsubj arc of ``sentences``: arrays over arcs ``[A]``
    ``sentence``, ``subject``, ``verb``, ``attractors``, ``nearest`` (the nearest-noun
    guess) and ``found`` ``[A, L * H]`` (the verb's most-attended word is the subject), plus
    ``skipped`` (sentences over ``config.max_pieces``) and ``heads`` ``(L, H)``."""
    spans = [conllu.word_spans(s) for s in sentences]
    keep = [i for i, sp in enumerate(spans) if sp is not None]
    rows = {k: [] for k in ("sentence", "subject", "verb", "attractors", "nearest")}
    found, shape, seen = [], None, 0
    for k, attention, _ in word_level.encode_words(
            model, [sentences[i].text for i in keep], [spans[i] for i in keep],
            batch_size=config.batch_size, max_pieces=config.max_pieces):
        s, seen = keep[k], seen + 1
        sentence = sentences[s]
        layers, heads, num_words, _ = attention.shape
        shape = (layers, heads)
        target = attention.reshape(layers * heads, num_words, num_words).argmax(-1)
        for subject, verb in subject_arcs(sentence):
            rows["sentence"].append(s)
            rows["subject"].append(subject)
            rows["verb"].append(verb)
            rows["attractors"].append(attractors(sentence, subject, verb))
            rows["nearest"].append(nearest_noun(sentence, verb))
            found.append(target[:, verb] == subject)
    out = {k: np.array(v, int) for k, v in rows.items()}
    out["found"] = np.array(found, bool).reshape(len(found), -1)
    out["skipped"] = len(sentences) - seen
    out["heads"] = shape
    return out


def _per_sentence(values, sentence, num_sentences):
    return np.bincount(sentence, weights=np.asarray(values, float), minlength=num_sentences)


def cell(test: dict, rows: np.ndarray, hits: dict, num_sentences: int) -> dict:
    """Accuracy of the head and each baseline on the test arcs ``rows``, and the paired
    differences head - baseline, as cluster-bootstrap records over sentences."""
    if rows.sum() == 0:
        return {"n": 0}
    sentence = test["sentence"][rows]
    count = _per_sentence(np.ones(rows.sum()), sentence, num_sentences)
    used = count > 0
    sums = {k: _per_sentence(v[rows], sentence, num_sentences)[used] for k, v in hits.items()}
    count = count[used]
    out = {"n": int(rows.sum())}
    for k, v in sums.items():
        out[k] = stats.ratio_summary(v, count)
    for b in BASELINES:
        out[f"head_minus_{b}"] = stats.ratio_summary(sums["head"] - sums[b], count)
    return out


def score(dev: dict, test: dict, config, num_test_sentences: int) -> dict:
    """The dev-chosen head and offset, scored on test overall, per distance bin and per
    attractor condition."""
    if dev["found"].shape[0] == 0 or test["found"].shape[0] == 0:
        raise ValueError("no subject-before-verb nsubj arcs in dev or test")
    layers, heads = dev["heads"]
    dev_acc = dev["found"].mean(axis=0)
    best = int(np.argmax(dev_acc))
    candidates = [k for k in range(-config.max_offset, config.max_offset + 1) if k != 0]
    dev_off = dev["subject"] - dev["verb"]
    offset = max(candidates, key=lambda k: (np.mean(dev_off == k), -abs(k)))
    hits = {"head": test["found"][:, best],
            "offset": (test["subject"] - test["verb"]) == offset,
            "nearest_noun": test["nearest"] == test["subject"]}
    distance = test["verb"] - test["subject"]
    bins = np.array([distance_bin(int(d)) for d in distance])
    cells = {"all": cell(test, np.ones(distance.size, bool), hits, num_test_sentences)}
    for label, _, _ in DISTANCE_BINS:
        cells[f"distance {label}"] = cell(test, bins == label, hits, num_test_sentences)
    cells[ATTRACTOR_CONDITIONS[0]] = cell(test, test["attractors"] == 0, hits,
                                          num_test_sentences)
    cells[ATTRACTOR_CONDITIONS[1]] = cell(test, test["attractors"] >= 1, hits,
                                          num_test_sentences)
    return {"head": {"layer": best // heads, "head": best % heads},
            "dev_accuracy": float(dev_acc[best]), "dev_arcs": int(dev_off.size),
            "dev_accuracy_per_head": dev_acc.reshape(layers, heads).tolist(),
            "offset": offset, "offset_dev_accuracy": float(np.mean(dev_off == offset)),
            "nearest_noun_dev_accuracy": float(np.mean(dev["nearest"] == dev["subject"])),
            "test_arcs": int(distance.size), "cells": cells}


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    dev = conllu.load_ud_ewt("dev", config.ud_path or None)
    test = conllu.load_ud_ewt("test", config.ud_path or None)
    if config.num_sentences:
        dev, test = dev[: config.num_sentences], test[: config.num_sentences]
    model = _minilm.load(config)
    dev_records = arc_records(model, dev, config)
    test_records = arc_records(model, test, config)
    scored = score(dev_records, test_records, config, len(test))
    metrics = {}
    for name, c in scored["cells"].items():
        if c["n"] == 0:
            continue
        key = name.replace("distance ", "d").replace(">=1 attractor", "attractors_1plus")
        key = key.replace("0 attractors", "attractors_0").replace("+", "plus").replace("-", "_")
        run_dir.log({"cell": name, **{k: v for k, v in c.items()}})
        metrics[f"{key}_head_accuracy"] = c["head"]
        for b in BASELINES:
            metrics[f"{key}_head_minus_{b}"] = c[f"head_minus_{b}"]
    return {"ud": {"dev_sentences": len(dev), "test_sentences": len(test),
                   "source": str(conllu.ud_ewt_path("dev", config.ud_path or None).parent)},
            "model": "all-MiniLM-L6-v2", "layers": dev_records["heads"][0],
            "heads_per_layer": dev_records["heads"][1],
            "skipped_sentences": {"dev": int(dev_records["skipped"]),
                                  "test": int(test_records["skipped"])},
            **scored, "metrics": metrics}


def _part(c: dict, baseline: str, margin: float, min_arcs: int) -> str:
    if c["n"] < min_arcs:
        return f"claim does not hold here (only {c['n']} test arcs)"
    lo = c[f"head_minus_{baseline}"]["ci95"][0]
    return ("claim holds" if lo > margin else "claim does not hold here") + \
        f" (lower end {lo:+.1%} vs {margin:.0%})"


def verdict(numbers: dict, config) -> dict:
    cells = numbers["cells"]
    parts = {
        "across distance (5+: head - fixed offset)": _part(
            cells["distance 5+"], "offset", config.distance_margin, config.min_arcs),
        "across attractors (>=1: head - nearest noun)": _part(
            cells[ATTRACTOR_CONDITIONS[1]], "nearest_noun", config.attractor_margin,
            config.min_arcs),
    }
    fmt = lambda m: stats.format_summary(m, percent=True)  # noqa: E731
    rows = []
    for name, c in cells.items():
        if c["n"] == 0:
            rows.append(f"{name}: no arcs")
            continue
        rows.append(f"{name} (n={c['n']}): head {fmt(c['head'])}, offset "
                    f"{c['offset']['mean']:.0%}, nearest noun {c['nearest_noun']['mean']:.0%}")
    h = numbers["head"]
    measured = (f"all-MiniLM-L6-v2, head L{h['layer']}H{h['head']} (counted from 0, chosen "
                f"on dev: {numbers['dev_accuracy']:.0%} of {numbers['dev_arcs']} arcs), "
                f"offset {numbers['offset']:+d} chosen on dev; test accuracy [95% interval "
                f"over sentences]: " + "; ".join(rows))
    cls = experiment.combine_verdicts(parts)
    reasons = "; ".join(f"{k}: {v}" for k, v in parts.items())
    return {"verdict": f"{cls}: {reasons}", "measured": measured, "parts": parts}


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> str:
    figure = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [4, 2]})
    groups = ([f"distance {b[0]}" for b in DISTANCE_BINS], list(ATTRACTOR_CONDITIONS))
    h = numbers["head"]
    series = ((f"head L{h['layer']}H{h['head']}", "head"),
              (f"fixed offset {numbers['offset']:+d}", "offset"),
              ("nearest preceding noun", "nearest_noun"))
    for ax, names, xlabel in zip(axes, groups, ("distance (words)", "attractors"),
                                 strict=True):
        x = np.arange(len(names))
        for j, (label, key) in enumerate(series):
            mean, err = [], []
            for name in names:
                c = numbers["cells"][name]
                if c["n"] == 0:
                    mean.append(np.nan)
                    err.append((0, 0))
                    continue
                m, (lo, hi) = c[key]["mean"], c[key]["ci95"]
                mean.append(m)
                err.append((m - lo, hi - m))
            ax.bar(x + (j - 1) * 0.27, mean, 0.27, yerr=np.array(err).T, label=label)
        ax.set_xticks(x, [n.replace("distance ", "") + f"\nn={numbers['cells'][n]['n']}"
                          for n in names], fontsize=7)
        ax.set(ylim=(0, 1), xlabel=xlabel, ylabel="test accuracy")
    axes[0].legend(fontsize=7)
    figure.suptitle("Does the verb's most-attended word find its subject? (UD EWT test, "
                    "all-MiniLM-L6-v2)", fontsize=9)
    figure.tight_layout()
    path = run_dir.figure_path("agreement")
    figure.savefig(path, dpi=110)
    return path.name


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    judged = verdict(numbers, config)
    headline = [k for k in ("d5plus_head_minus_offset",
                            "attractors_1plus_head_minus_nearest_noun",
                            "all_head_accuracy") if k in numbers["metrics"]]
    return {**numbers, "claim": CLAIM, "rule": rule(config), **judged, "seeds": [],
            "headline": headline, "published": [],
            "published_note": ("Linzen et al. 2016 measure an LSTM's number prediction, "
                               "not attention; no attention figure on UD EWT is quoted"),
            "figures": [plot(numbers, config, run_dir)]}


if __name__ == "__main__":
    experiment.main(NAME, run)
