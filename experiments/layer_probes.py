"""Does attention build understanding up through the layers? Tenney, Das & Pavlick 2019
("BERT Rediscovers the Classical NLP Pipeline") on all-MiniLM-L6-v2.

Each property is read from the word vectors after the embedding layer (layer 0) and after
each of the 6 attention layers (``attnjax.analysis.words``: a word's vector is the mean of
its pieces):

* part of speech (grammar): a linear probe (softmax regression, ``fit_probe``) on the word
  vector predicts its UPOS tag; trained on UD English EWT dev, accuracy on test;
* dependency relation (grammar): a linear probe on ``[dependent vector; head vector]``
  predicts the arc's relation without subtype (Tenney et al.'s edge probing, span = word);
  trained on dev, accuracy on test;
* coreference: on the WSC273 twin pairs (``attnjax.data.wsc``), whether the pronoun's
  vector is closer (cosine) to the gold candidate's than to the other's, averaged over the
  pair's two sentences. The twins flip the answer with the word order kept, so a
  representation blind to the flip word scores exactly 1/2 on every pair (layer 0 does);
* meaning (word sense in context): the silhouette of each occurrence of a polysemous word
  among the word's occurrences (``attnjax.data.english.POLYSEMY``: "bank" of a river vs
  of money), cosine distance, as in experiments/contextual_meaning.py: 0 = senses do not
  cluster.

Per property and layer: the score with its 95% interval (cluster bootstrap over test
sentences for the probes, over pairs / occurrences otherwise), the layer where it peaks,
and Tenney's expected layer (center of gravity) of the differential scores,
``E = sum_l l * Delta(l) / sum_l Delta(l)``, here on the running maximum of the per-layer
score (``center_of_gravity``: our probes read one layer each, where Tenney's cumulative
scalar mix cannot lose what a lower layer had, so a dip after the peak adds no negative
mass), with an item-bootstrap interval. The probes sit beside a majority-class baseline.

    python -m experiments.layer_probes [--config configs/layer_probes.py[:tour|smoke]]
"""

from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, stats
from attnjax.analysis import words as word_level
from attnjax.data import conllu, wsc
from attnjax.data.english import POLYSEMY
from experiments import REGISTRY, _minilm

NAME = "layer_probes"
CLAIM = REGISTRY[NAME].claim
PROPERTIES = ("pos", "deps", "coreference", "polysemy")
LABELS = {"pos": "part of speech (probe acc.)", "deps": "dependency relation (probe acc.)",
          "coreference": "coreference (WSC273, cosine)", "polysemy": "word sense (silhouette)"}
# The seed's order: grammar (POS, deps) before pronoun resolution before meaning. Each pair
# (earlier, later) is one comparison of expected layers.
COMPARISONS = (("pos", "coreference"), ("deps", "coreference"), ("pos", "polysemy"),
               ("deps", "polysemy"), ("coreference", "polysemy"))
RULE = (
    "all-MiniLM-L6-v2, layers 0 (embeddings) to 6; no seeds (a pretrained model), 95% "
    "intervals bootstrap the items: test sentences (cluster bootstrap) for the probes, WSC "
    "twin pairs for coreference, word occurrences for polysemy. Scores per layer: POS and "
    "dependency-relation accuracy of linear probes trained on UD EWT dev (L2 {l2:g}, fixed), "
    "scored on test; WSC273 pronoun->gold-candidate cosine preference per pair; sense "
    "silhouette per occurrence. A property is located when (a) at some layer the lower end "
    "of its score's interval is above chance (probes: the majority-class baseline's test "
    "accuracy; coreference {coref_chance:g}; polysemy {poly_chance:g}) and (b) at some "
    "layer l >= 1 the lower end of the paired gain score(l) - score(0) is above 0; a "
    "property at chance at every layer, or with no gain over layer 0, is not located and "
    "has no expected layer. Expected layer: Tenney's center of gravity over Delta(l) of the "
    "running maximum of the per-layer score. Five comparisons test the seed's order, "
    "E[later] - E[earlier] for (POS, coreference), (deps, coreference), (POS, polysemy), "
    "(deps, polysemy), (coreference, polysemy), bootstrapped jointly (same resamples where "
    "items are shared, independent otherwise): confirmed if both properties are located, "
    "both expected layers are defined in >= {min_defined:.0%} of the resamples and the "
    "difference's lower end is > 0; reversed if so but its upper end is < 0; an interval "
    "that contains 0 (overlapping, a tie) or an unlocated property counts as neither. The "
    "claim holds if all 5 are confirmed, does not hold if no more are confirmed than "
    "reversed, mixed otherwise. Peaks (argmax layer; ties go to the lower layer) are "
    "reported with their bootstrap shares, not judged; POS vs deps is reported, not judged "
    "(both are grammar). The rule tests the order of the layers, not absolute thirds of "
    "the depth."
)
PUBLISHED = [{
    "source": "Tenney, Das & Pavlick 2019, abstract (research.google/pubs/"
              "bert-rediscovers-the-classical-nlp-pipeline)",
    "value": "BERT's regions for each task appear in the expected sequence: POS tagging, "
             "parsing, NER, semantic roles, then coreference",
    "setting": "BERT-base/large (12/24 layers), edge probes on OntoNotes etc. with scalar "
               "mixing (cumulative); ours: MiniLM-L6 (6 layers), one-layer linear probes on "
               "UD EWT, an untrained cosine signal on WSC273 and sense silhouettes; their "
               "per-task expected layers (Figure 1) could not be retrieved with the search "
               "tool, so only the order is quoted",
}]


def rule(config) -> str:
    """The pre-registered rule with this config's thresholds."""
    return RULE.format(l2=config.probe.l2, coref_chance=config.rule.coreference_chance,
                       poly_chance=config.rule.polysemy_chance,
                       min_defined=config.rule.min_defined_fraction)


# --------------------------------------------------------------------------- math


def center_of_gravity(scores, *, cumulative: bool = True) -> np.ndarray:
    """Tenney et al.'s expected layer ``sum_l l * Delta(l) / sum_l Delta(l)``, ``l = 1..L``.

    Args:
      scores: ``[..., L + 1]`` a property's score after layer 0 (embeddings), 1, ..., L.
      cumulative: take ``Delta(l)`` of the running maximum ``max_{k <= l} score(k)`` (what a
        probe that may read every layer up to ``l`` could reach: Delta >= 0); False uses
        the raw differences ``score(l) - score(l - 1)``.

    Returns:
      ``[...]`` expected layers; NaN where the total gain ``sum_l Delta(l)`` is not
      positive (nothing to locate).
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim < 1 or scores.shape[-1] < 2:
        raise ValueError(f"center_of_gravity: `scores` must be [..., L + 1] with L >= 1, "
                         f"got shape {list(scores.shape)}")
    curve = np.maximum.accumulate(scores, axis=-1) if cumulative else scores
    delta = np.diff(curve, axis=-1)
    layers = np.arange(1, scores.shape[-1])
    total = delta.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (delta * layers).sum(-1) / total
    return np.where(total > 1e-12, expected, np.nan)


def peak_layer(scores) -> np.ndarray:
    """``[...]`` the layer of the highest score of ``[..., L + 1]`` (ties: the lowest)."""
    return np.argmax(np.asarray(scores), axis=-1)


def layer_bootstrap(numerators, denominators=None, *, resamples: int, seed: int,
                    chunk: int = 250) -> np.ndarray:
    """``[resamples, L + 1]`` per-layer scores of item resamples (with replacement).

    ``numerators`` ``[N, L + 1]`` per item (a test sentence's correct words per layer);
    ``denominators`` ``[N]`` (its words) or None for a plain mean. Two calls with the same
    ``N`` and ``seed`` draw the same items, so properties over the same items pair up.
    """
    num = np.asarray(numerators, np.float64)
    if num.ndim != 2 or num.shape[0] == 0:
        raise ValueError(f"layer_bootstrap: `numerators` must be [N, L + 1], got "
                         f"{list(num.shape)}")
    den = np.ones(num.shape[0]) if denominators is None else np.asarray(denominators, float)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, resamples, chunk):
        index = rng.integers(0, num.shape[0], size=(min(chunk, resamples - start),
                                                    num.shape[0]))
        out.append(num[index].sum(1) / np.maximum(den[index].sum(1), 1e-12)[:, None])
    return np.concatenate(out)


@dataclasses.dataclass(frozen=True)
class Probe:
    """A trained softmax-regression probe: ``p(y | x) = softmax(((x - mean) / scale) W + b)``.

    Attributes:
      weights: ``[D, C]``; bias: ``[C]``; mean, scale: ``[D]`` the training features'
        statistics (standardisation); steps: L-BFGS iterations run; loss: the final
        training objective; grad_norm: its gradient norm at the end.
    """

    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    steps: int
    loss: float
    grad_norm: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``[N, C]`` from ``features [N, D]``."""
        return ((np.asarray(features, np.float32) - self.mean) / self.scale) @ self.weights \
            + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``[N]`` the most probable class (ties: the lowest index)."""
        return np.argmax(self.logits(features), axis=-1)


@functools.lru_cache(maxsize=8)
def _lbfgs_solver(num_classes: int, max_steps: int):
    """jitted ``(x [N, D], y [N], l2, tolerance) -> (params, steps, loss, grad_norm)``:
    full-batch L-BFGS on softmax regression from zero weights (one per class count, so each
    layer's probe reuses the compilation)."""
    import jax
    import jax.numpy as jnp
    import optax
    import optax.tree_utils as otu

    @jax.jit
    def solve(x, y, l2, tolerance):
        def fun(params):
            logits = x @ params["weights"] + params["bias"]
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss + l2 * jnp.sum(params["weights"] ** 2)

        optimizer = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(fun)
        params = {"weights": jnp.zeros((x.shape[1], num_classes), x.dtype),
                  "bias": jnp.zeros((num_classes,), x.dtype)}

        def step(carry):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = optimizer.update(grad, state, params, value=value, grad=grad,
                                              value_fn=fun)
            return optax.apply_updates(params, updates), state

        def going(carry):
            _, state = carry
            count = otu.tree_get(state, "count")
            norm = otu.tree_norm(otu.tree_get(state, "grad"))
            return (count == 0) | ((count < max_steps) & (norm >= tolerance))

        params, state = jax.lax.while_loop(going, step, (params, optimizer.init(params)))
        loss, grad = jax.value_and_grad(fun)(params)
        return params, otu.tree_get(state, "count"), loss, otu.tree_norm(grad)

    return solve


def fit_probe(features, labels, num_classes: int, *, l2: float, max_steps: int,
              tolerance: float = 1e-5) -> Probe:
    """A linear softmax-regression probe trained by full-batch L-BFGS from zero weights.

    Minimises ``mean cross-entropy + l2 * ||W||^2`` on standardised features (each
    dimension centred and scaled by its training standard deviation). Zero init and a full
    batch make it deterministic: the same data give the same probe.

    Args:
      features: ``[N, D]`` training vectors.
      labels: ``[N]`` integer classes in ``[0, num_classes)``.
      num_classes: ``C``.
      l2: the weight penalty (fixed in the config, not tuned).
      max_steps: L-BFGS iterations at most; tolerance: stop when the gradient norm is
        below it.
    """
    x = np.asarray(features, np.float32)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"fit_probe: need features [N, D] and labels [N], got "
                         f"{list(x.shape)} and {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"fit_probe: `labels` must be integers in [0, {num_classes}), got "
                         f"dtype {y.dtype}, range [{y.min()}, {y.max()}]")
    mean = x.mean(0)
    scale = np.maximum(x.std(0), 1e-6).astype(np.float32)
    solve = _lbfgs_solver(int(num_classes), int(max_steps))
    params, steps, loss, grad_norm = solve((x - mean) / scale, y.astype(np.int32),
                                           np.float32(l2), np.float32(tolerance))
    return Probe(np.asarray(params["weights"]), np.asarray(params["bias"]), mean, scale,
                 int(steps), float(loss), float(grad_norm))


def sense_silhouettes(vectors: np.ndarray, senses: np.ndarray) -> np.ndarray:
    """``[N]`` each occurrence's silhouette among one word's occurrences (Rousseeuw 1987,
    cosine distance, two senses with >= 2 occurrences each): ``(b - a) / max(a, b)``, ``a``
    the mean distance to its own sense's other occurrences, ``b`` to the other sense's.
    (The same statistic as experiments/contextual_meaning.py, which experiments may not
    import.)"""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    distances = 1.0 - unit @ unit.T
    same = senses[:, None] == senses[None, :]
    own = same & ~np.eye(len(senses), dtype=bool)
    a = (distances * own).sum(1) / own.sum(1)
    b = (distances * ~same).sum(1) / (~same).sum(1)
    return (b - a) / np.maximum(np.maximum(a, b), 1e-12)


# --------------------------------------------------------------------------- data


def treebank_vectors(model, sentences, config) -> dict:
    """Every word's vector at every layer, its UPOS tag, and every arc of ``sentences``.

    Returns ``vectors`` ``[L + 1, N_words, D]``, ``upos`` ``[N_words]`` (tags),
    ``word_sentence`` ``[N_words]`` (index into the kept sentences), ``arcs`` ``[A, 2]``
    (dependent, head: global word indices), ``relation`` ``[A]`` (without subtype),
    ``arc_sentence`` ``[A]``, ``sentences`` (kept) and ``skipped`` (sentences whose words
    could not be located in the text or with more than ``config.max_pieces`` pieces).
    """
    spans = [conllu.word_spans(s) for s in sentences]
    keep = [i for i, sp in enumerate(spans) if sp is not None]
    per_sentence = {}
    for k, _, vectors in word_level.encode_words(
            model, [sentences[i].text for i in keep], [spans[i] for i in keep],
            batch_size=config.batch_size, max_pieces=config.max_pieces):
        per_sentence[keep[k]] = vectors
    kept = sorted(per_sentence)
    blocks, upos, word_sentence, arcs, relation, arc_sentence = [], [], [], [], [], []
    offset = 0
    for row, s in enumerate(kept):
        tree = sentences[s]
        blocks.append(per_sentence[s])
        upos += list(tree.upos)
        word_sentence += [row] * len(tree)
        for dep, head, rel in tree.arcs():
            arcs.append((offset + dep, offset + head))
            relation.append(rel)
            arc_sentence.append(row)
        offset += len(tree)
    return {"vectors": np.concatenate(blocks, axis=1), "upos": np.array(upos),
            "word_sentence": np.array(word_sentence), "arcs": np.array(arcs).reshape(-1, 2),
            "relation": np.array(relation), "arc_sentence": np.array(arc_sentence),
            "sentences": len(kept), "skipped": len(sentences) - len(kept)}


def phrase_vectors(model, sentences, phrases, which, batch_size: int = 32) -> np.ndarray:
    """``[L + 1, N, K, D]``: in sentence ``i``, the mean vector of the pieces of each of
    its ``K`` phrases ``phrases[i][k]`` (its ``which[k]`` occurrence: "first" / "last")
    after the embeddings and every layer."""
    length = model.tokenize(sentences)[0].shape[1]  # one padded shape, one compilation
    out = []
    for start in range(0, len(sentences), batch_size):
        encoded = model.encode(sentences[start : start + batch_size], attention=True,
                               pad_to=length)
        for j, pieces in enumerate(encoded.pieces):
            hidden = encoded.hidden_states[:, j]  # [L + 1, T, D]
            out.append(np.stack([
                hidden[:, model.word_positions(pieces, phrase, which=w)].mean(axis=1)
                for phrase, w in zip(phrases[start + j], which, strict=True)], axis=1))
    return np.stack(out, axis=1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1),
                                        1e-12)


# --------------------------------------------------------------------------- measuring


def _labels(train: np.ndarray, test: np.ndarray):
    classes = sorted(set(train.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    # A class seen only in test gets -1: no probe and no baseline can be right on it.
    return (classes, np.array([index[c] for c in train]),
            np.array([index.get(c, -1) for c in test]))


def probe_property(name: str, levels: int, train_x, train_y, test_x, test_y, test_sentence,
                   num_sentences: int, config, run_dir=None) -> dict:
    """A probe per layer, trained on dev and scored on test.

    Args:
      levels: ``L + 1``, the layers read (0 = embeddings).
      train_x, test_x: callables ``layer -> [N, D]`` features of the dev / test items.
      train_y, test_y: ``[N]`` their labels (strings).
      test_sentence: ``[N_test]`` the test sentence of each item (``< num_sentences``).

    Returns per-sentence counts, ``numerators`` ``[S, L + 1]`` (correct items per layer) and
    ``denominators`` ``[S]`` (items), the majority-class baseline and each fit's record.
    """
    classes, y_train, y_test = _labels(train_y, test_y)
    count = np.bincount(test_sentence, minlength=num_sentences).astype(float)
    correct, fits = [], []
    for layer in range(levels):
        x = train_x(layer)
        probe = fit_probe(x, y_train, len(classes), l2=config.probe.l2,
                          max_steps=config.probe.max_steps, tolerance=config.probe.tolerance)
        right = (probe.predict(test_x(layer)) == y_test).astype(float)
        correct.append(np.bincount(test_sentence, weights=right, minlength=num_sentences))
        fits.append({"layer": layer, "steps": probe.steps, "train_loss": probe.loss,
                     "grad_norm": probe.grad_norm,
                     "train_accuracy": float(np.mean(probe.predict(x) == y_train)),
                     "test_accuracy": float(right.mean())})
        if run_dir is not None:
            run_dir.log({"property": name, **fits[-1]})
    majority = int(np.bincount(y_train).argmax())
    base = np.bincount(test_sentence, weights=(y_test == majority).astype(float),
                       minlength=num_sentences)
    return {"numerators": np.stack(correct, axis=1), "denominators": count,
            "classes": len(classes), "majority_class": classes[majority],
            "majority": stats.ratio_summary(base, count), "fits": fits,
            "train_items": int(y_train.size), "test_items": int(y_test.size)}


def measure_probes(model, config, run_dir) -> dict:
    dev = conllu.load_ud_ewt("dev", config.ud_path or None)
    test = conllu.load_ud_ewt("test", config.ud_path or None)
    if config.num_sentences:
        dev, test = dev[: config.num_sentences], test[: config.num_sentences]
    train, held = treebank_vectors(model, dev, config), treebank_vectors(model, test, config)
    levels = train["vectors"].shape[0]

    def words(records):
        return lambda layer: records["vectors"][layer]

    def edges(records):
        def features(layer):  # [dependent; head], Tenney et al.'s span pair
            v = records["vectors"][layer]
            return np.concatenate([v[records["arcs"][:, 0]], v[records["arcs"][:, 1]]], -1)
        return features

    pos = probe_property("pos", levels, words(train), train["upos"], words(held), held["upos"],
                         held["word_sentence"], held["sentences"], config, run_dir)
    deps = probe_property("deps", levels, edges(train), train["relation"], edges(held),
                          held["relation"], held["arc_sentence"], held["sentences"], config,
                          run_dir)
    data = {"dev_sentences": train["sentences"], "test_sentences": held["sentences"],
            "skipped_sentences": {"dev": train["skipped"], "test": held["skipped"]},
            "dev_words": int(train["upos"].size), "test_words": int(held["upos"].size),
            "dev_arcs": int(train["relation"].size), "test_arcs": int(held["relation"].size)}
    return {"pos": pos, "deps": deps, "data": data}


def measure_coreference(model, config) -> dict:
    """Per pair and layer ``[P, L + 1]``: the mean over the pair's sentences of whether the
    pronoun's vector is closer (cosine) to the gold candidate's than the other's (a tie
    counts 1/2)."""
    pairs, info = wsc.load_pairs(config.wsc_path or None, config.wsc_schemas or None)
    pairs = pairs[: config.num_pairs or None]
    sentences, phrases, answers, pair_of = [], [], [], []
    for p, pair in enumerate(pairs):
        for sentence, answer in zip(pair.sentences, pair.answers, strict=True):
            sentences.append(sentence)
            phrases.append((pair.pronoun, *pair.candidates))
            answers.append(answer)
            pair_of.append(p)
    answers, pair_of = np.array(answers), np.array(pair_of)
    v = phrase_vectors(model, sentences, phrases, ("last", "first", "first"),
                       config.batch_size)  # [L + 1, N, 3, D]
    similarity = _cosine(v[:, :, :1], v[:, :, 1:])  # [L + 1, N, 2]
    rows = np.arange(len(answers))
    gold, other = similarity[:, rows, answers], similarity[:, rows, 1 - answers]
    correct = ((gold > other) + 0.5 * (gold == other)).T  # [N, L + 1]
    per_pair = np.stack([np.bincount(pair_of, weights=correct[:, layer]) / np.bincount(pair_of)
                         for layer in range(correct.shape[1])], axis=1)
    return {"numerators": per_pair, "denominators": None, "pairs": len(pairs),
            "sentences": len(sentences),
            "source": {"path": str(config.wsc_path or wsc.DEFAULT_PATH),
                       "first_schemas": config.wsc_schemas or info["schemas"], **info}}


def measure_polysemy(model, config) -> dict:
    """Per occurrence and layer ``[N, L + 1]``: its sense silhouette among its word's
    occurrences."""
    k = config.sentences_per_sense or None
    rows, words = [], []
    for first, second in POLYSEMY:
        if config.words and first.word not in config.words:
            continue
        sentences = list(first.sentences[:k]) + list(second.sentences[:k])
        senses = np.array([0] * len(first.sentences[:k]) + [1] * len(second.sentences[:k]))
        v = phrase_vectors(model, sentences, [(first.word,)] * len(sentences), ("first",),
                           config.batch_size)[:, :, 0]  # [L + 1, N, D]
        rows.append(np.stack([sense_silhouettes(layer, senses) for layer in v], axis=1))
        words.append({"word": first.word, "senses": [first.sense, second.sense],
                      "occurrences": len(sentences)})
    return {"numerators": np.concatenate(rows), "denominators": None, "words": words}


def _quantiles(x: np.ndarray) -> list[float]:
    return [float(q) for q in np.quantile(x, [0.025, 0.975])]


def summarise(name: str, record: dict, chance: float, chance_source: str, config,
              seed: int) -> tuple[dict, np.ndarray]:
    """Per-layer intervals, paired gains over layer 0, peak and expected layer of one
    property; also returns its ``[R]`` bootstrapped expected layers."""
    num, den = record["numerators"], record["denominators"]
    levels = num.shape[1]
    if den is None:
        curve = [stats.item_summary(num[:, layer]) for layer in range(levels)]
        gains = [_minilm.paired_summary(num[:, layer], num[:, 0]) for layer in range(1, levels)]
    else:
        curve = [stats.ratio_summary(num[:, layer], den) for layer in range(levels)]
        gains = [stats.ratio_summary(num[:, layer] - num[:, 0], den)
                 for layer in range(1, levels)]
    scores = np.array([c["mean"] for c in curve])
    draws = layer_bootstrap(num, den, resamples=config.bootstrap.resamples, seed=seed)
    expected = center_of_gravity(draws)
    finite = expected[np.isfinite(expected)]
    point = center_of_gravity(scores)
    peaks = peak_layer(draws)
    summary = {
        "label": LABELS[name], "chance": chance, "chance_source": chance_source,
        "layers": curve, "scores": scores.tolist(),
        "gain_over_layer0": [{"layer": layer, **g} for layer, g in enumerate(gains, start=1)],
        "peak": {"layer": int(peak_layer(scores)), "score": float(scores.max()),
                 "bootstrap_share": np.bincount(peaks, minlength=levels).astype(float)
                 .__truediv__(len(peaks)).tolist()},
        "expected_layer": {"mean": float(point) if np.isfinite(point) else None,
                           "ci95": _quantiles(finite) if finite.size else [None, None],
                           "defined_fraction": float(finite.size / expected.size)},
        "items": int(num.shape[0]),
    }
    return summary, expected


def compare(earlier: np.ndarray, later: np.ndarray) -> dict:
    """``E[later] - E[earlier]`` over joint resamples where both are defined."""
    both = np.isfinite(earlier) & np.isfinite(later)
    difference = later[both] - earlier[both]
    return {"mean": float(difference.mean()) if difference.size else None,
            "ci95": _quantiles(difference) if difference.size else [None, None],
            "defined_fraction": float(both.mean())}


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    model = _minilm.load(config)
    probes = measure_probes(model, config, run_dir)
    records = {"pos": probes["pos"], "deps": probes["deps"],
               "coreference": measure_coreference(model, config),
               "polysemy": measure_polysemy(model, config)}
    chance = {
        "pos": (probes["pos"]["majority"]["mean"],
                f"majority class {probes['pos']['majority_class']!r} on test"),
        "deps": (probes["deps"]["majority"]["mean"],
                 f"majority relation {probes['deps']['majority_class']!r} on test"),
        "coreference": (config.rule.coreference_chance, "flip-blind preference per twin pair"),
        "polysemy": (config.rule.polysemy_chance, "senses that do not cluster"),
    }
    # Probes share the test sentences: one seed, so their resamples pair up.
    seeds = {"pos": config.bootstrap.seed, "deps": config.bootstrap.seed,
             "coreference": config.bootstrap.seed + 1, "polysemy": config.bootstrap.seed + 2}
    properties, expected = {}, {}
    for name in PROPERTIES:
        properties[name], expected[name] = summarise(name, records[name], *chance[name],
                                                     config, seeds[name])
        run_dir.log({"property": name, "scores": properties[name]["scores"],
                     "expected_layer": properties[name]["expected_layer"]})
    for name in ("pos", "deps"):
        record = records[name]
        properties[name].update(majority=record["majority"], classes=record["classes"],
                                fits=record["fits"], train_items=record["train_items"],
                                test_items=record["test_items"])
    properties["coreference"].update(pairs=records["coreference"]["pairs"],
                                     sentences=records["coreference"]["sentences"],
                                     source=records["coreference"]["source"])
    properties["polysemy"]["words"] = records["polysemy"]["words"]
    comparisons = [{"earlier": a, "later": b, "difference": compare(expected[a], expected[b])}
                   for a, b in (*COMPARISONS, ("pos", "deps"))]
    metrics = {}
    for name, p in properties.items():
        for layer, record in enumerate(p["layers"]):
            metrics[f"{name}_layer{layer}"] = record
        metrics[f"{name}_expected_layer"] = p["expected_layer"]
    for name in ("pos", "deps"):
        metrics[f"{name}_majority_baseline"] = properties[name]["majority"]
    return {"model": str(model.path), "num_layers": int(model.config.num_layers),
            "data": probes["data"], "properties": properties, "comparisons": comparisons,
            "metrics": metrics}


# --------------------------------------------------------------------------- verdict


def located(p: dict) -> bool:
    """Above chance at some layer and a paired gain over layer 0 at some layer >= 1."""
    above = any(r["ci95"][0] > p["chance"] for r in p["layers"])
    gains = any(g["ci95"][0] > 0 for g in p["gain_over_layer0"])
    return bool(above and gains)


def judge(comparison: dict, properties: dict, config) -> str:
    """"confirmed" / "reversed" / "tie" (the interval contains 0) / "unlocated"."""
    a, b = comparison["earlier"], comparison["later"]
    d = comparison["difference"]
    if not (located(properties[a]) and located(properties[b])) or d["mean"] is None \
            or d["defined_fraction"] < config.rule.min_defined_fraction:
        return "unlocated"
    lo, hi = d["ci95"]
    return "confirmed" if lo > 0 else "reversed" if hi < 0 else "tie"


def verdict(numbers: dict, config) -> dict:
    props = numbers["properties"]
    judged = [c for c in numbers["comparisons"]
              if (c["earlier"], c["later"]) in COMPARISONS]
    outcomes = [judge(c, props, config) for c in judged]
    k, r = outcomes.count("confirmed"), outcomes.count("reversed")
    if k == len(COMPARISONS):
        cls = "claim holds"
    elif k <= r:
        cls = "claim does not hold here"
    else:
        cls = "mixed"

    def where(name):
        p = props[name]
        e = p["expected_layer"]
        loc = "" if located(p) else ", not located"
        if e["mean"] is None:
            return f"{name}: peak layer {p['peak']['layer']}, no expected layer{loc}"
        lo, hi = e["ci95"]
        return (f"{name}: peak layer {p['peak']['layer']}, expected layer {e['mean']:.2f} "
                f"[{lo:.2f}, {hi:.2f}]{loc}")

    def said(c, outcome):
        d = c["difference"]
        interval = ("" if d["mean"] is None else
                    f" {d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]")
        return f"{c['earlier']} before {c['later']}{interval}: {outcome}"

    fmt = stats.format_summary
    curves = "; ".join(
        f"{name} " + " ".join(f"{s:.3f}" if name == "polysemy" else f"{s:.1%}"
                              for s in props[name]["scores"]) for name in PROPERTIES)
    pos, deps = props["pos"], props["deps"]
    measured = (
        f"all-MiniLM-L6-v2, layers 0-{numbers['num_layers']} [95% item intervals]: scores "
        f"per layer {curves}; POS probe {fmt(pos['layers'][pos['peak']['layer']], percent=True)}"
        f" at its peak vs majority {fmt(pos['majority'], percent=True)}, deps probe "
        f"{fmt(deps['layers'][deps['peak']['layer']], percent=True)} vs majority "
        f"{fmt(deps['majority'], percent=True)} ({numbers['data']['test_sentences']} test "
        f"sentences); coreference on {props['coreference']['pairs']} WSC273 twin pairs, "
        f"polysemy on {props['polysemy']['items']} occurrences; "
        + "; ".join(where(name) for name in PROPERTIES))
    reasons = (f"{k} of {len(COMPARISONS)} orderings of expected layers confirmed, {r} "
               f"reversed: " + "; ".join(said(c, o) for c, o in zip(judged, outcomes,
                                                                  strict=True))
               + " (no seeds, a pretrained model; intervals bootstrap the items)")
    return {"verdict": f"{cls}: {reasons}", "measured": measured,
            "judged": [{"earlier": c["earlier"], "later": c["later"], "outcome": o}
                       for c, o in zip(judged, outcomes, strict=True)]}


# --------------------------------------------------------------------------- output


def plot(numbers: dict, run_dir: experiment.RunDir) -> list[str]:
    props = numbers["properties"]
    figure = Figure(figsize=(16, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 5)
    layers = np.arange(numbers["num_layers"] + 1)
    ax = axes[0]
    for i, name in enumerate(PROPERTIES):
        scores = np.array(props[name]["scores"])
        gain = scores.max() - scores[0]
        normalised = (scores - scores[0]) / gain if gain > 1e-12 else scores * 0
        where = "" if located(props[name]) else " (not located: no E line)"
        ax.plot(layers, normalised, "-o", color=f"C{i}", label=name + where)
        e = props[name]["expected_layer"]["mean"]
        if e is not None and not where:
            ax.axvline(e, color=f"C{i}", ls="--", lw=0.8)
    ax.set(xlabel="layer (0 = embeddings)", ylabel="(score - layer 0) / max gain",
           title="normalised gain (dashed: expected layer)")
    ax.legend(fontsize=7)
    for i, (ax, name) in enumerate(zip(axes[1:], PROPERTIES, strict=True)):
        p = props[name]
        lo, hi = np.array([r["ci95"] for r in p["layers"]]).T
        ax.plot(layers, p["scores"], "-o", color=f"C{i}")
        ax.fill_between(layers, lo, hi, color=f"C{i}", alpha=0.2)
        ax.axhline(p["chance"], color="k", ls=":", lw=1, label=f"chance: {p['chance_source']}")
        ax.set(xlabel="layer", title=p["label"])
        ax.legend(fontsize=6)
    figure.tight_layout()
    path = run_dir.figure_path("layer_probes")
    figure.savefig(path, dpi=100)
    return [path.name]


def table(numbers: dict) -> str:
    props = numbers["properties"]
    head = f"{'layer':<7}" + "".join(f"{name:>26}" for name in PROPERTIES)
    lines = [head]
    for layer in range(numbers["num_layers"] + 1):
        row = f"{layer:<7}"
        for name in PROPERTIES:
            r = props[name]["layers"][layer]
            row += f"{stats.format_summary(r, '.3f', percent=name != 'polysemy'):>26}"
        lines.append(row)
    lines.append(f"{'peak':<7}" + "".join(f"{props[n]['peak']['layer']:>26}" for n in PROPERTIES))
    cells = []
    for name in PROPERTIES:
        e = props[name]["expected_layer"]
        cells.append("-" if e["mean"] is None else
                     f"{e['mean']:.2f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]")
    lines.append(f"{'E[l]':<7}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    print(table(numbers))
    return {**numbers, "claim": CLAIM, "rule": rule(config), **verdict(numbers, config),
            "seeds": [], "headline": [f"{name}_expected_layer" for name in PROPERTIES],
            "published": PUBLISHED, "figures": plot(numbers, run_dir)}


if __name__ == "__main__":
    experiment.main(NAME, run)
