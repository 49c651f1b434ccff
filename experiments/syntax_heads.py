"""Do attention heads track grammar? Clark et al. 2019 ("What Does BERT Look At?", sec. 4.2)
on real annotated text.

For every dependency arc of UD English EWT (dev: 2,001 sentences, test: 2,077; gold
Universal Dependencies trees) and for every head of a pretrained model, the head "finds"
the arc when the word it attends to most is the other end of the arc. Attention is read at
the word level as Clark et al. do (``attnjax.analysis.words``: the sum over the attended
word's pieces, the mean over the attending word's). Both directions are scored:

* dependent -> head ("an adjective attends to its noun"),
* head -> dependent ("a verb attends to its object"; each arc is one item).

For each frequent relation and direction the best head is chosen on dev and scored on
test, against the best *fixed-offset* baseline (always the word ``k`` to the left or right,
``k`` chosen on dev): many relations are mostly local (a determiner precedes its noun), so
beating position alone is what tracking grammar means. "all" pools every non-punctuation
arc: can one head find syntactic heads in general? 95% intervals are cluster bootstraps
over test sentences (``attnjax.stats.ratio_summary``). Clark et al.'s BERT-base figures
(Stanford Dependencies on the Penn Treebank, not UD on web text) are quoted beside ours.

Models: all-MiniLM-L6-v2 (bidirectional, 6 x 12 heads) and, where installed,
SmolLM2-135M-Instruct (causal, 30 x 9 heads; a causal head can only attend to earlier
words, so each direction counts only the arcs whose target precedes the query: "n" says how
many).

    python -m experiments.syntax_heads [--config configs/syntax_heads.py[:tour|smoke]]
"""

from __future__ import annotations

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, stats
from attnjax.analysis import words as word_level
from attnjax.data import conllu
from experiments import REGISTRY, _llm, _minilm

NAME = "syntax_heads"
CLAIM = REGISTRY[NAME].claim
DIRECTIONS = ("dependent->head", "head->dependent")
RULE = (
    "Items: dependency arcs of UD English EWT; the head is chosen on dev, scored on test; "
    "95% intervals are cluster bootstraps over test sentences. For each model, relation r "
    "of {relations} and direction, the chosen head's test accuracy minus the best "
    "fixed-offset baseline's (offset chosen on dev, |k| <= {max_offset}) is a paired "
    "difference. A relation is tracked when, in at least one direction, the lower end of "
    "that difference's interval exceeds {margin:.0%}. Two parts per model: (1) specific "
    "relations: holds if at least {min_relations} relations are tracked, does not hold "
    "otherwise; (2) one head for grammar as a whole: the 'all' row (every non-punctuation "
    "arc) holds if its difference's lower end exceeds {margin:.0%} in at least one "
    "direction, does not hold otherwise. The claim holds if every part of every model "
    "holds, does not hold if none does, mixed otherwise."
)


def rule(config) -> str:
    """The pre-registered rule with this config's thresholds."""
    return RULE.format(relations=", ".join(config.relations), max_offset=config.max_offset,
                       margin=config.margin, min_relations=config.min_relations)


def relation_label(sentence: conllu.Sentence, i: int, relations) -> str:
    """Word ``i``'s relation as the table names it: the full relation when it is listed
    (``"nmod:poss"``), else without its subtype."""
    full = sentence.deprels[i]
    return full if full in relations else sentence.relation(i)


def arc_records(model, sentences, config, *, prefix_ids=(), causal: bool = False) -> dict:
    """Every arc of ``sentences`` with, for each head of ``model``, whether the head finds
    it in each direction.

    Returns a dict of arrays over arcs ``[A]``: ``sentence`` (index into ``sentences``),
    ``relation`` (label), ``dependent``, ``head`` (word indices), and ``found``
    ``[2, A, L * H]`` bool (direction, arc, head) and ``attendable`` ``[2, A]`` (False where
    a causal model cannot attend to the target); plus ``skipped`` (sentences with more
    pieces than ``config.max_pieces``), ``heads`` ``(L, H)`` and ``maps`` (sentence index
    -> its word-level attention ``[L * H, W, W]``, for the attention parser).
    """
    texts = [s.text for s in sentences]
    spans = [conllu.word_spans(s) for s in sentences]
    keep = [i for i, sp in enumerate(spans) if sp is not None]
    rows: dict[str, list] = {k: [] for k in ("sentence", "relation", "dependent", "head")}
    found = [[], []]
    shape = None
    maps = {}
    for k, attention, _ in word_level.encode_words(
            model, [texts[i] for i in keep], [spans[i] for i in keep],
            batch_size=config.batch_size, max_pieces=config.max_pieces,
            prefix_ids=prefix_ids):
        s = keep[k]
        sentence = sentences[s]
        layers, heads, num_words, _ = attention.shape
        shape = (layers, heads)
        flat = attention.reshape(layers * heads, num_words, num_words)
        maps[s] = flat
        # The word each head attends to most from every word: [L * H, W].
        target = flat.argmax(-1)
        for dep, head, _ in sentence.arcs():
            rows["sentence"].append(s)
            rows["relation"].append(relation_label(sentence, dep, config.relations))
            rows["dependent"].append(dep)
            rows["head"].append(head)
            found[0].append(target[:, dep] == head)
            found[1].append(target[:, head] == dep)
    out = {k: np.array(v) for k, v in rows.items()}
    out["found"] = np.stack([np.array(f, bool) for f in found])
    # dependent->head looks from the dependent at the head; head->dependent the other way.
    before = out["head"] < out["dependent"]
    out["attendable"] = (np.stack([before, ~before]) if causal
                         else np.ones((2, before.size), bool))
    out["skipped"] = len(sentences) - len(maps)
    out["heads"] = shape
    out["maps"] = maps
    return out


def _per_sentence(values: np.ndarray, sentence: np.ndarray, num_sentences: int) -> np.ndarray:
    return np.bincount(sentence, weights=values.astype(float), minlength=num_sentences)


def score_relation(dev: dict, test: dict, relation: str, direction: int, config,
                   num_test_sentences: int) -> dict | None:
    """The dev-chosen head and offset for one relation and direction, scored on test.

    ``relation`` ``"all"`` pools every arc but punctuation. Returns None where dev or test
    has fewer than ``config.min_arcs`` attendable arcs.
    """
    def select(records):
        if relation == "all":
            rows = records["relation"] != "punct"
        else:
            rows = records["relation"] == relation
        return rows & records["attendable"][direction]

    dev_rows, test_rows = select(dev), select(test)
    if dev_rows.sum() < config.min_arcs or test_rows.sum() < config.min_arcs:
        return None
    dev_acc = dev["found"][direction][dev_rows].mean(axis=0)  # [L * H]
    best = int(np.argmax(dev_acc))
    layers, heads = dev["heads"]

    def offsets(records, rows):
        query = records["dependent"] if direction == 0 else records["head"]
        target = records["head"] if direction == 0 else records["dependent"]
        return (target - query)[rows]

    candidates = [k for k in range(-config.max_offset, config.max_offset + 1) if k != 0]
    dev_offsets = offsets(dev, dev_rows)
    offset = max(candidates, key=lambda k: (np.mean(dev_offsets == k), -abs(k)))
    test_sentence = test["sentence"][test_rows]
    head_found = test["found"][direction][test_rows, best]
    offset_found = offsets(test, test_rows) == offset
    count = _per_sentence(np.ones_like(head_found), test_sentence, num_test_sentences)
    used = count > 0
    head_sum = _per_sentence(head_found, test_sentence, num_test_sentences)[used]
    base_sum = _per_sentence(offset_found, test_sentence, num_test_sentences)[used]
    count = count[used]
    return {
        "relation": relation, "direction": DIRECTIONS[direction],
        "head": {"layer": best // heads, "head": best % heads},
        "dev_accuracy": float(dev_acc[best]), "dev_arcs": int(dev_rows.sum()),
        "test": stats.ratio_summary(head_sum, count),
        "offset": offset, "offset_dev_accuracy": float(np.mean(dev_offsets == offset)),
        "offset_test": stats.ratio_summary(base_sum, count),
        "difference": stats.ratio_summary(head_sum - base_sum, count),
        "dev_accuracy_per_head": dev_acc.reshape(layers, heads).tolist(),
    }


def parser_rows(records: dict, sentences) -> dict:
    """The attention parser's candidates: for every word with a head (not the root, not
    punctuation), one row per other word of its sentence, with the features of Clark et
    al.'s attention-only probe: every head's attention from the word to the candidate and
    from the candidate to the word, ``[R, 2 * L * H]``."""
    features, segment, gold, sentence_of, offsets = [], [], [], [], []
    word = 0
    for s, flat in sorted(records["maps"].items()):
        tree = sentences[s]
        num_words = flat.shape[-1]
        for i in range(num_words):
            if tree.heads[i] == 0 or tree.relation(i) == "punct":
                continue
            others = np.array([j for j in range(num_words) if j != i])
            features.append(np.concatenate([flat[:, i, others], flat[:, others, i]]).T)
            segment.append(np.full(others.size, word))
            gold.append(others == tree.head_index(i))
            offsets.append(others - i)
            sentence_of.append(s)
            word += 1
    return {"features": np.concatenate(features).astype(np.float32),
            "segment": np.concatenate(segment), "gold": np.concatenate(gold),
            "offset": np.concatenate(offsets), "sentence": np.array(sentence_of),
            "words": word}


def attention_parser(dev_rows: dict, test_rows: dict, config, num_test_sentences: int
                     ) -> dict:
    """Clark et al.'s attention-only probe (sec. 5): ``p(head of i = j)`` is a softmax over
    ``j`` of a weighted sum of every head's attention between ``i`` and ``j`` (both
    directions), the weights trained on dev (Adam, full batch, L2), unlabeled attachment
    accuracy on test, beside the right-branching baseline (head = next word)."""
    import jax
    import jax.numpy as jnp
    import optax

    def scores(weights, rows):
        return jnp.asarray(rows["features"]) @ weights

    def loss_fn(weights, rows):
        logits = scores(weights, rows)
        segment, n = jnp.asarray(rows["segment"]), rows["words"]
        top = jax.ops.segment_max(logits, segment, num_segments=n)
        norm = jnp.log(jax.ops.segment_sum(jnp.exp(logits - top[segment]), segment,
                                           num_segments=n)) + top
        gold = jnp.sum(jnp.where(jnp.asarray(rows["gold"]), logits, 0.0))
        return (norm.sum() - gold) / n + config.parser.l2 * jnp.sum(weights ** 2)

    optimizer = optax.adam(config.parser.learning_rate)
    weights = jnp.zeros(dev_rows["features"].shape[1], jnp.float32)
    state = optimizer.init(weights)

    @jax.jit
    def step(weights, state):
        loss, grad = jax.value_and_grad(loss_fn)(weights, dev_rows)
        updates, state = optimizer.update(grad, state)
        return optax.apply_updates(weights, updates), state, loss

    for _ in range(config.parser.steps):
        weights, state, loss = step(weights, state)

    def attached(rows, predict):
        # The highest-scoring candidate of each word; ties go to the first.
        order = np.lexsort((-predict, rows["segment"]))
        first = np.r_[True, rows["segment"][order][1:] != rows["segment"][order][:-1]]
        return rows["gold"][order][first]  # [words]: the chosen candidate is the head

    def summary(rows, predict):
        right = attached(rows, predict).astype(float)
        per = np.bincount(rows["sentence"], weights=right, minlength=num_test_sentences)
        count = np.bincount(rows["sentence"], minlength=num_test_sentences)
        return stats.ratio_summary(per[count > 0], count[count > 0])

    learned = np.asarray(scores(weights, test_rows))
    return {"uas": summary(test_rows, learned),
            "right_branching": summary(test_rows, (test_rows["offset"] == 1).astype(float)),
            "left_branching": summary(test_rows, (test_rows["offset"] == -1).astype(float)),
            "dev_loss": float(loss), "dev_words": dev_rows["words"],
            "test_words": test_rows["words"], "steps": config.parser.steps}


def measure_model(label: str, model, dev_sentences, test_sentences, config, *,
                  prefix_ids=(), causal=False, run_dir=None) -> dict:
    dev = arc_records(model, dev_sentences, config, prefix_ids=prefix_ids, causal=causal)
    test = arc_records(model, test_sentences, config, prefix_ids=prefix_ids, causal=causal)
    rows = []
    for relation in (*config.relations, "all"):
        for direction in range(2):
            row = score_relation(dev, test, relation, direction, config, len(test_sentences))
            if row is not None:
                rows.append(row)
                if run_dir is not None:
                    run_dir.log({"model": label, **{k: v for k, v in row.items()
                                                    if k != "dev_accuracy_per_head"}})
    layers, heads = dev["heads"]
    parser = (attention_parser(parser_rows(dev, dev_sentences), parser_rows(test, test_sentences),
                               config, len(test_sentences)) if config.parser.steps else None)
    return {"model": label, "layers": layers, "heads_per_layer": heads, "causal": causal,
            "parser": parser,
            "dev_arcs": int(dev["relation"].size), "test_arcs": int(test["relation"].size),
            "skipped_sentences": {"dev": int(dev["skipped"]), "test": int(test["skipped"])},
            "rows": rows}


def _prefix(model, config) -> tuple[int, ...]:
    if not config.prefix_token:
        return ()
    token = model.tokenizer.token_to_id(config.prefix_token)
    if token is None:
        raise ValueError(f"config.prefix_token={config.prefix_token!r} is not a token of "
                         f"{model.path}")
    return (int(token),)


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    dev = conllu.load_ud_ewt("dev", config.ud_path or None)
    test = conllu.load_ud_ewt("test", config.ud_path or None)
    if config.num_sentences:
        dev, test = dev[: config.num_sentences], test[: config.num_sentences]
    models, skipped = [], {}
    for name in config.models:
        if name == "minilm":
            model = _minilm.load(config)  # MiniLM is the primary model: Skipped propagates
            models.append(measure_model("all-MiniLM-L6-v2", model, dev, test, config,
                                        run_dir=run_dir))
        elif name == "smollm2":
            try:
                model = _llm.load(config.llm)
            except experiment.Skipped as e:
                skipped[name] = str(e)
                continue
            n = config.llm_num_sentences or None
            models.append(measure_model(
                "SmolLM2-135M-Instruct", model, dev[:n], test[:n], config,
                prefix_ids=_prefix(model, config.llm), causal=True, run_dir=run_dir))
        else:
            raise ValueError(f"config.models: unknown model {name!r}; use 'minilm', 'smollm2'")
    metrics = {}
    for m in models:
        key = m["model"].split("-")[0].lower()
        for row in m["rows"]:
            stem = f"{key}_{row['relation']}_{row['direction']}".replace("->", "_to_")
            metrics[f"{stem}_accuracy"] = row["test"]
            metrics[f"{stem}_minus_offset"] = row["difference"]
    return {"ud": {"dev_sentences": len(dev), "test_sentences": len(test),
                   "source": str(conllu.ud_ewt_path("dev", config.ud_path or None).parent)},
            "models": models, "skipped_models": skipped, "metrics": metrics}


# Clark et al. 2019, Table 1 (sec. 4.2): BERT-base on the WSJ Penn Treebank with Stanford
# Dependencies. The paper's own table could not be read with the search tools; these are
# the stored outputs of the authors' notebook cell commented "This produces the scores in
# Table 1" (CLARK_2019_SOURCE): accuracy of the best head, the best fixed offset's
# accuracy, the head as layer-head counted from 0, and the direction. Stanford relation
# names are mapped to the nearest UD relation ("sd"); UD's case arc (preposition -> noun)
# is Stanford's pobj arc reversed, so its direction flips.
CLARK_2019_SOURCE = ("github.com/clarkkev/attention-analysis, Syntax_Analysis.ipynb (commit "
                     "b609cfc), stored output of the cell that 'produces the scores in Table 1'")
CLARK_2019: dict[str, dict] = {
    r: {"sd": sd, "accuracy": acc, "offset_accuracy": base, "offset": k, "head": head,
        "direction": d}
    for r, sd, acc, base, k, head, d in (
        ("all", "all", 34.7, 26.7, 1, "6-5", "dependent->head"),
        ("nsubj", "nsubj", 58.5, 45.5, 1, "7-1", "dependent->head"),
        ("obj", "dobj", 86.8, 40.0, -2, "7-9", "dependent->head"),
        ("det", "det", 94.3, 51.7, 1, "7-10", "dependent->head"),
        ("amod", "amod", 75.6, 68.3, 1, "3-9", "dependent->head"),
        ("case", "pobj", 76.3, 34.6, -2, "8-5", "dependent->head (pobj: head->dependent)"),
        ("advmod", "advmod", 48.8, 40.2, 1, "6-5", "dependent->head"),
        ("aux", "aux", 81.1, 71.5, 1, "3-9", "dependent->head"),
        ("nmod:poss", "poss", 80.5, 47.7, 1, "6-5", "dependent->head"),
        ("mark", "mark", 50.7, 14.5, 2, "7-1", "dependent->head"),
        ("compound", "nn", 70.4, 70.2, 1, "3-9", "dependent->head"),
        ("aux:pass", "auxpass", 94.1, 82.5, 1, "3-9", "dependent->head"),
        ("ccomp", "ccomp", 48.8, 12.4, -2, "7-0", "dependent->head"),
        ("cc", "cc", 47.8, 41.2, -1, "6-4", "dependent->head"),
        ("conj", "conj", 53.3, 26.8, -2, "6-0", "dependent->head"),
    )
}


REPORTED = ("all", "det", "obj", "nsubj")  # the rows the tour's report shows


def published(config, numbers: dict) -> tuple[list[dict], list[dict]]:
    """Clark et al.'s figures beside the first model's (MiniLM's) test accuracy in the same
    direction: ``(report rows, the whole table)``, in the protocol's
    ``{"source", "value", "ours", "setting"}`` form (percent)."""
    ours = {}
    if numbers["models"]:
        ours = {(r["relation"], r["direction"]): 100 * r["test"]["mean"]
                for r in numbers["models"][0]["rows"]}
    table = []
    for relation, entry in CLARK_2019.items():
        if relation not in (*config.relations, "all"):
            continue
        direction = entry["direction"].split(" ")[0]
        table.append({
            "source": f"Clark et al. 2019 Table 1, {entry['sd']} (head {entry['head']})",
            "value": entry["accuracy"], "ours": ours.get((relation, direction)),
            "relation": relation, "direction": direction, **entry,
            "setting": "BERT-base, WSJ with Stanford Dependencies, vs all-MiniLM-L6-v2 on "
                       f"UD EWT test ({relation}, {direction}); {CLARK_2019_SOURCE}"})
    return [row for row in table if row["relation"] in REPORTED], table


def model_parts(model: dict, config) -> dict[str, str]:
    best = {}
    for row in model["rows"]:
        lo = row["difference"]["ci95"][0]
        best[row["relation"]] = max(best.get(row["relation"], -np.inf), lo)
    tracked = [r for r in config.relations if best.get(r, -np.inf) > config.margin]
    return {
        "specific": "claim holds" if len(tracked) >= config.min_relations
        else "claim does not hold here",
        "all": "claim holds" if best.get("all", -np.inf) > config.margin
        else "claim does not hold here",
        "tracked": tracked,
    }


def verdict(numbers: dict, config) -> dict:
    parts, lines = {}, []
    for model in numbers["models"]:
        p = model_parts(model, config)
        parts[f"{model['model']}: specific relations"] = p["specific"]
        parts[f"{model['model']}: one head for all arcs"] = p["all"]
        rows = {(r["relation"], r["direction"]): r for r in model["rows"]}
        fmt = lambda m: stats.format_summary(m, percent=True)  # noqa: E731
        best_rows = []
        for relation in (*config.relations, "all"):
            pair = [rows[(relation, d)] for d in DIRECTIONS if (relation, d) in rows]
            if not pair:
                continue
            r = max(pair, key=lambda r: r["difference"]["mean"])
            n = f", n={r['test']['n']}" if model["causal"] else ""
            best_rows.append(
                f"{relation} ({r['direction']}{n}, L{r['head']['layer']}H{r['head']['head']}) "
                f"{fmt(r['test'])} vs offset {r['offset']:+d} {r['offset_test']['mean']:.0%}")
        lines.append(
            f"{model['model']} ({model['test_arcs']} test arcs; layer L and head H counted "
            f"from 0, chosen on dev; test accuracy [95% interval over sentences] vs the "
            f"dev-chosen fixed offset): "
            + "; ".join(best_rows)
            + f". Tracked (difference's lower end > {config.margin:.0%}): "
            f"{', '.join(p['tracked']) or 'none'} ({len(p['tracked'])} of "
            f"{len(config.relations)})"
            + (f". Attention-only parser (Clark et al. sec. 5, weights over every head "
               f"trained on dev): UAS {fmt(model['parser']['uas'])} on "
               f"{model['parser']['test_words']} test words vs right-branching "
               f"{fmt(model['parser']['right_branching'])}" if model.get("parser") else ""))
    if numbers["skipped_models"]:
        lines.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in
                                              numbers["skipped_models"].items()))
    cls = experiment.combine_verdicts(parts)
    reasons = "; ".join(f"{k}: {v}" for k, v in parts.items())
    return {"verdict": f"{cls}: {reasons}", "measured": " | ".join(lines), "parts": parts}


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> str:
    models = numbers["models"]
    figure = Figure(figsize=(11, 3.2 * len(models)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(models), 1, squeeze=False)[:, 0]
    for ax, model in zip(axes, models, strict=True):
        labels, head_acc, base_acc, err = [], [], [], []
        for row in model["rows"]:
            labels.append(f"{row['relation']}\n{'d>h' if row['direction'][0] == 'd' else 'h>d'}")
            head_acc.append(row["test"]["mean"])
            base_acc.append(row["offset_test"]["mean"])
            lo, hi = row["test"]["ci95"]
            err.append((row["test"]["mean"] - lo, hi - row["test"]["mean"]))
        x = np.arange(len(labels))
        ax.bar(x - 0.2, head_acc, 0.4, yerr=np.array(err).T, label="best head (chosen on dev)")
        ax.bar(x + 0.2, base_acc, 0.4, label="best fixed offset (chosen on dev)")
        ax.set_xticks(x, labels, fontsize=6)
        ax.set(ylim=(0, 1), ylabel="test accuracy",
               title=f"{model['model']}: does the most-attended word complete the arc? "
                     "(UD EWT test)")
        ax.legend(fontsize=7)
    figure.tight_layout()
    path = run_dir.figure_path("syntax_heads")
    figure.savefig(path, dpi=110)
    return path.name


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    judged = verdict(numbers, config)
    headline = [k for k in numbers["metrics"] if k.endswith("minus_offset")][:4]
    report_rows, table = published(config, numbers)
    return {**numbers, "claim": CLAIM, "rule": rule(config), **judged, "seeds": [],
            "headline": headline, "published": report_rows, "published_table": table,
            "published_note": (
                "Clark et al. 2019, Table 1, as the authors' notebook stores it (BERT-base, "
                "WSJ, Stanford Dependencies: another model, corpus and annotation scheme; "
                "heads counted from 0). Their sec. 5 attention-only parser's UAS could not "
                "be read from the paper (only a third-party note, not quoted), so none is "
                "put beside ours"),
            "figures": [plot(numbers, config, run_dir)]}


if __name__ == "__main__":
    experiment.main(NAME, run)
