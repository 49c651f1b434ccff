"""Positions: is attention order-blind, so that word order must be added explicitly (unless a
causal mask already leaks it)?

One small pre-LN transformer (``config.transformer``) is trained with each position encoding
of ``TransformerConfig.position`` (none, sinusoidal, learned, rope, alibi) in two
architectures that differ only where the claim says they should:

* ``encoder``: bidirectional self-attention (``nn.encoder_classifier``: ``Encoder`` + an MLP
  read out at one position). Without positions it is permutation equivariant: the state it
  reads is a function of the token there and of the multiset of the others.
* ``decoder``: causal self-attention (``nn.DecoderOnlyLM``), read as a classifier through its
  next-token logits at the same position (``NextTokenReadout``). Haviv et al. (2022) found
  that causal LMs without positions still learn position: a token can count its
  predecessors.

Every task is "read the answer at the last real token", so both architectures see the whole
input at the read position and differ only in the mask. The tasks (``TASKS``; the config
picks the order tasks and the control; the tour runs precedence, recall and bag):

* ``coreference`` (order; full variant): Winograd-style sentences (``attnjax.data.coreference``)
  of the families whose two candidates are of one kind ("arjun beat omar in the race because
  he was strong ."; two animals chasing): swapping the candidates keeps the words and flips
  the answer, so without order it is 50%. Answer: the antecedent word, scored among the two
  candidates. Trained on held-in noun pairs, tested on held-out pairs (and, for half of the
  test sentences, a held-out template).
* ``precedence`` (order): ``x_1..x_M ?`` with one ``A`` and one ``B`` among random symbols ->
  whichever comes first (chance 50%): the coarse order of coreference without its semantics.
* ``recall`` (order): ``BOS x_1..x_N x_1..x_j`` -> ``x_{j+1}`` (``attnjax.data.induction``,
  fixed period ``N``): the token exactly ``N - 1`` places back. Chance 1/16.
* ``bag`` (control): ``x_1..x_M ?`` -> the most frequent symbol (a unique mode is drawn), a
  function of the multiset alone: positions should not matter.

SCAN and toy translation are not used: they need an encoder-decoder, whose decoder already
has the causal mask, so they cannot separate "positions" from "mask" as the paired
encoder/decoder design here does (and they would not fit the tour's 5 minutes).

The grid is 5 encodings x 2 architectures x tasks x seeds. Each (architecture, encoding) is
one vmapped program of the trainer (``attnjax.train.train``) whose members are the
(task, seed) pairs (trainer seed ``task_index * SEED_STRIDE + seed``): all tasks share one
padded length and vocabulary, so a program compiles once for every task. Dev and test sets
are fixed across seeds and encodings (paired). Per seed, the best positional encoding is
chosen on dev and its test accuracy is compared with no positions (``gap = best - none``).

    python -m experiments.positions [--config configs/positions.py[:tour|:smoke]]
"""

from __future__ import annotations

import flax.linen as flax_nn
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, nn, stats, train
from attnjax.data import coreference, induction
from attnjax.data.vocab import PAD_ID
from attnjax.train import SeedRngs
from experiments import REGISTRY

NAME = "positions"
CLAIM = REGISTRY[NAME].claim
RULE = (
    "Per seed, test accuracy of every encoding ({encodings}) on every task; 'best' is the "
    "positional encoding (not none) with the highest dev accuracy of that seed, 'gap' its "
    "test accuracy minus that of no positions. Parts, one per architecture x task: (1) the "
    "encoder needs positions: on each order task ({order_tasks}) the encoder's best reaches "
    ">= {min_accuracy:.0%} and its gap is >= {needed_gap:.0%}; (2) the causal mask leaks "
    "order: on each order task the decoder's best reaches >= {min_accuracy:.0%} and its gap "
    "is <= {recovered_gap:.0%}; (3) control: on {control_task} both architectures' best "
    "reaches >= {min_accuracy:.0%} and |gap| <= {control_gap:.0%}. A part holds if it passes "
    "in >= {holds_at:.0%} of seeds, does not hold if in <= {fails_at:.0%}, mixed otherwise; "
    "the claim holds if every part holds, does not hold if every part does not, mixed "
    "otherwise."
)
SEED_STRIDE = 1000  # trainer seed of (task i, seed s): i * SEED_STRIDE + s
BAG_FIRST_ID = 2  # symbols of the synthetic tasks are ids 2.. (0 = padding, 1 = BOS)
TASKS = ("coreference", "precedence", "recall", "bag")
EVAL_STREAMS = {"precedence": 1, "recall": 2, "bag": 3}  # dev/test draws, synthetic tasks
TRAIN_KEYS = ("tokens", "position", "label")  # what every member's batches hold
HAVIV = (
    "Haviv et al. 2022 (Findings of EMNLP), abstract (ar5iv 2203.16634): causal LMs without "
    "positions \"are still competitive with standard models\"; \"We conjecture that causal "
    "attention enables the model to infer the number of predecessors that each token can "
    "attend to, thereby approximating its absolute position.\""
)


def rule(config: ml_collections.ConfigDict) -> str:
    return RULE.format(encodings=", ".join(config.encodings),
                       order_tasks=", ".join(config.order_tasks),
                       control_task=config.control_task, **config.rule, **config.verdict)


def tasks_of(config) -> tuple[str, ...]:
    return (*config.order_tasks, config.control_task)


# --------------------------------------------------------------------------- the tasks


def recall_batch(rng: np.random.Generator, batch_size: int, half_length: int,
                 vocab_size: int) -> dict[str, np.ndarray]:
    """``BOS x_1..x_N x_1..x_j`` (right-padded) -> ``x_{j+1}``, ``j`` uniform in ``1..N-1``.

    Returns ``tokens [B, 1 + 2N]``, ``position [B]`` (the last real token, ``N + j``) and
    ``label [B]`` (the token that followed it in the full repeated sequence).
    """
    seqs = induction.repeated_sequences(rng, batch_size, half_length, vocab_size)
    tokens = seqs["tokens"]
    # Input positions whose next token is predictable from the first copy.
    valid = induction.copy_targets(seqs["period"], half_length)["second"]
    position = np.argmax(np.where(valid, rng.random(valid.shape), -1.0), axis=1)
    rows = np.arange(batch_size)
    label = tokens[rows, position + 1]
    tokens = np.where(np.arange(tokens.shape[1])[None, :] > position[:, None], PAD_ID, tokens)
    return {"tokens": tokens.astype(np.int32), "position": position.astype(np.int32),
            "label": label.astype(np.int32)}


def bag_batch(rng: np.random.Generator, batch_size: int, length: int,
              num_symbols: int) -> dict[str, np.ndarray]:
    """``x_1..x_M ?`` -> the most frequent symbol; only rows with a unique mode are kept.

    Symbols are ids ``2 .. 1 + num_symbols``, the query token ``2 + num_symbols``. Returns
    ``tokens [B, M + 1]``, ``position [B]`` (= M, the query) and ``label [B]``.
    """
    kept: list[np.ndarray] = []
    while sum(len(k) for k in kept) < batch_size:
        draw = rng.integers(0, num_symbols, size=(2 * batch_size, length))
        counts = np.stack([(draw == s).sum(1) for s in range(num_symbols)], axis=1)
        top2 = np.sort(counts, axis=1)[:, -2:]
        kept.append(draw[top2[:, 1] > top2[:, 0]])
    draw = np.concatenate(kept)[:batch_size]
    counts = np.stack([(draw == s).sum(1) for s in range(num_symbols)], axis=1)
    query = np.full((batch_size, 1), BAG_FIRST_ID + num_symbols)
    return {"tokens": np.concatenate([draw + BAG_FIRST_ID, query], 1).astype(np.int32),
            "position": np.full(batch_size, length, np.int32),
            "label": (counts.argmax(1) + BAG_FIRST_ID).astype(np.int32)}


def precedence_batch(rng: np.random.Generator, batch_size: int, length: int,
                     num_symbols: int) -> dict[str, np.ndarray]:
    """``x_1..x_M ?`` with one ``A`` and one ``B`` among random symbols -> whichever of the
    two comes first (the same tokens in the other order give the other answer).

    Symbols are ids ``2 .. 1 + num_symbols``, then ``A``, ``B`` and the query token. Returns
    ``tokens [B, M + 1]``, ``position [B]`` (= M), ``label [B]`` (``A`` or ``B``) and
    ``candidates [B, 2]`` (``A, B``: the answer is scored between them).
    """
    a, b = BAG_FIRST_ID + num_symbols, BAG_FIRST_ID + num_symbols + 1
    tokens = rng.integers(BAG_FIRST_ID, a, size=(batch_size, length))
    # Two distinct positions: the first pair of a random permutation of each row.
    slots = np.argsort(rng.random((batch_size, length)), axis=1)[:, :2]
    rows = np.arange(batch_size)
    tokens[rows, slots[:, 0]] = a
    tokens[rows, slots[:, 1]] = b
    query = np.full((batch_size, 1), b + 1)
    return {"tokens": np.concatenate([tokens, query], 1).astype(np.int32),
            "position": np.full(batch_size, length, np.int32),
            "label": np.where(slots[:, 0] < slots[:, 1], a, b).astype(np.int32),
            "candidates": np.tile(np.array([[a, b]], np.int32), (batch_size, 1))}


def coreference_examples(task: coreference.CoreferenceTask, n: int, split: str, *,
                         families, max_filler: int, stream: int) -> list:
    """``n`` examples of ``split`` from the given families only (drawn in rounds)."""
    out: list = []
    round_ = 0
    while len(out) < n:
        drawn = task.sample(2 * n, split, filler_tokens=range(max_filler + 1),
                            stream=stream * 64 + round_)
        out += [e for e in drawn if e.family in families]
        round_ += 1
    return out[:n]


def coreference_arrays(examples, vocab, length: int) -> dict[str, np.ndarray]:
    """``tokens``, ``position`` (the last token, "."), ``label`` (the antecedent's token id)
    and ``candidates [N, 2]`` (both candidates' token ids, for the two-way score)."""
    arrays = coreference.encode(examples, vocab, length)
    rows = np.arange(len(examples))
    return {"tokens": arrays["tokens"], "position": arrays["last"],
            "label": arrays["choices"][rows, arrays["label"]].astype(np.int32),
            "candidates": arrays["choices"].astype(np.int32)}


def pad_to(arrays: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """``arrays`` with ``tokens`` right-padded to ``length``."""
    tokens = arrays["tokens"]
    return {**arrays, "tokens": np.pad(tokens, ((0, 0), (0, length - tokens.shape[1])))}


class Tasks:
    """The configured tasks on one padded length and vocabulary: per-seed training batches
    and the dev/test sets (fixed across seeds and encodings)."""

    def __init__(self, config):
        self.config = config
        self.names = tasks_of(config)
        unknown = [t for t in self.names if t not in TASKS]
        if unknown or len(set(self.names)) != len(self.names):
            raise ValueError(f"config.order_tasks + control_task must be distinct names from "
                             f"{TASKS}, got {list(self.names)}")
        c = config
        lengths = {"precedence": c.precedence.length + 1, "recall": 1 + 2 * c.recall.half_length,
                   "bag": c.bag.length + 1}
        vocabs = {"precedence": BAG_FIRST_ID + c.precedence.num_symbols + 3,
                  "recall": c.recall.vocab_size, "bag": BAG_FIRST_ID + c.bag.num_symbols + 1}
        if "coreference" in self.names:
            self.coref_vocab = coreference.CoreferenceTask(0).vocabulary()
            lengths["coreference"] = coreference.max_length(c.coreference.max_filler)
            vocabs["coreference"] = len(self.coref_vocab)
        self.length = max(lengths[t] for t in self.names)
        self.vocab_size = max(vocabs[t] for t in self.names)
        self._coref_batches: dict[int, object] = {}
        ev = config.eval
        self.dev = {t: self._eval_set(t, 0, ev.num_dev) for t in self.names}
        self.test = {t: self._eval_set(t, 1, ev.num_test) for t in self.names}

    def _coref(self, seed: int, n: int, split: str, stream: int) -> dict:
        cc = self.config.coreference
        task = coreference.CoreferenceTask(seed, cc.held_out_pair_fraction)
        examples = coreference_examples(task, n, split, families=tuple(cc.families),
                                        max_filler=cc.max_filler, stream=stream)
        length = coreference.max_length(cc.max_filler)
        return pad_to(coreference_arrays(examples, self.coref_vocab, length), self.length)

    def _synthetic(self, name: str, rng: np.random.Generator, n: int) -> dict:
        c = self.config
        if name == "precedence":
            arrays = precedence_batch(rng, n, c.precedence.length, c.precedence.num_symbols)
        elif name == "recall":
            arrays = recall_batch(rng, n, c.recall.half_length, c.recall.vocab_size)
        else:
            arrays = bag_batch(rng, n, c.bag.length, c.bag.num_symbols)
        return pad_to(arrays, self.length)

    def _eval_set(self, name: str, split: int, n: int) -> dict:
        """Dev (0; coreference: held-in noun pairs) or test (1; held-out pairs)."""
        seed = int(self.config.eval.seed)
        if name == "coreference":
            return self._coref(seed, n, ("train", "test")[split], stream=1 + split)
        return self._synthetic(name, np.random.default_rng([seed, split, EVAL_STREAMS[name]]), n)

    def batch(self, name: str, rngs: SeedRngs, step: int, batch_size: int) -> dict:
        """The training batch of one (task, seed) member at ``step``: a pure function of the
        seed's streams and the step."""
        if name == "coreference":
            if rngs.seed not in self._coref_batches:
                arrays = self._coref(rngs.int("data_draw"), int(
                    self.config.coreference.num_train), "train", stream=0)
                self._coref_batches[rngs.seed] = train.make_batch_fn(
                    {k: arrays[k] for k in TRAIN_KEYS}, batch_size, rngs.int("data_order"))
            return self._coref_batches[rngs.seed](step)
        arrays = self._synthetic(name, np.random.default_rng([rngs.int("data_draw"), step]),
                                 batch_size)
        return {k: arrays[k] for k in TRAIN_KEYS}


def accuracy(logits: np.ndarray, arrays: dict) -> float:
    """Fraction of ``arrays["label"]`` predicted by ``logits [N, V]``: the argmax among
    ``arrays["candidates"] [N, K]`` where given (two-way tasks), else over the vocabulary."""
    if "candidates" in arrays:
        scores = np.take_along_axis(logits, arrays["candidates"], axis=1)
        predicted = arrays["candidates"][np.arange(len(scores)), scores.argmax(1)]
    else:
        predicted = logits.argmax(1)
    return float(np.mean(predicted == arrays["label"]))


def chance(config) -> dict[str, float]:
    """Accuracy of guessing: 1/2 for the two-way tasks, 1/symbols for recall and for the
    bag (its mode is uniform over the symbols)."""
    return {"coreference": 0.5, "precedence": 0.5,
            "recall": 1.0 / (config.recall.vocab_size - induction.FIRST_TOKEN_ID),
            "bag": 1.0 / config.bag.num_symbols}


# --------------------------------------------------------------------------- the models


class NextTokenReadout(flax_nn.Module):
    """A decoder-only LM read as a classifier: its next-token logits at ``position``.

    Same call signature as ``nn.PositionClassifier`` (``tokens [B, L]``, ``position [B]``),
    so ``train.classification_loss_fn`` and ``train.predict`` drive both.
    """

    lm: flax_nn.Module

    def __call__(self, tokens, position, *, deterministic: bool = True):
        if position.shape != tokens.shape[:1]:
            raise ValueError(f"NextTokenReadout: `position` must be [B={tokens.shape[0]}], "
                             f"got {list(position.shape)}")
        logits = self.lm(tokens, deterministic=deterministic)  # [B, L, V]
        return jnp.take_along_axis(logits, position[:, None, None], axis=1)[:, 0]


def build_model(arch: str, position: str, config, vocab_size: int, max_len: int):
    """The ``arch`` classifier with position encoding ``position``; everything else from
    ``config.transformer``."""
    t = config.transformer
    if arch == "encoder":
        block = ml_collections.ConfigDict({"transformer": {**t.to_dict(), "position": position},
                                           "readout": "identity"})
        return nn.encoder_classifier(block, vocab_size, max_len)
    if arch == "decoder":
        return NextTokenReadout(nn.DecoderOnlyLM(nn.TransformerConfig(
            vocab_size=vocab_size, model_dim=t.model_dim, num_heads=t.num_heads,
            num_layers=t.num_layers, mlp_dim=t.mlp_dim, dropout_rate=t.dropout_rate,
            position=position, max_len=max_len)))
    raise ValueError(f"unknown architecture {arch!r}: expected 'encoder' or 'decoder'")


# --------------------------------------------------------------------------- measure


def member_seed(task_index: int, seed: int) -> int:
    if not 0 <= seed < SEED_STRIDE:
        raise ValueError(f"seeds must be in [0, {SEED_STRIDE}), got {seed}")
    return task_index * SEED_STRIDE + seed


def train_arm(arch: str, position: str, tasks: Tasks, config, run_dir) -> dict:
    """Trains one (architecture, encoding) on every (task, seed) as one vmapped program;
    returns its dev and test accuracies per task and seed."""
    model = build_model(arch, position, config, tasks.vocab_size, tasks.length)
    seeds = [int(s) for s in config.seeds]
    members = {member_seed(i, s): (name, s) for i, name in enumerate(tasks.names)
               for s in seeds}
    batch_size = int(config.train.batch_size)
    example = tasks.dev[tasks.names[0]]
    result = train.train(
        name=f"{arch}-{position}", seeds=list(members), config=config.train,
        init=lambda key: model.init(key, example["tokens"][:2], example["position"][:2])["params"],
        loss_fn=train.classification_loss_fn(model, "position"),
        batches=lambda rngs, step: tasks.batch(members[rngs.seed][0], rngs, step, batch_size),
        run_dir=run_dir, parallel=config.parallel, vmap_seeds=config.vmap_seeds,
        progress=False,
    )
    per_task = {name: {"dev": [], "test": []} for name in tasks.names}
    for member, params in zip(result.seeds, result.params, strict=True):
        name, _ = members[member]
        for split, sets in (("dev", tasks.dev), ("test", tasks.test)):
            arrays = sets[name]
            logits = train.predict(model, params, {k: arrays[k] for k in ("tokens", "position")},
                                   "position")
            per_task[name][split].append(accuracy(logits, arrays))
    final = {f"{members[m][0]}/{members[m][1]}": r.get("token_accuracy")
             for m, r in zip(result.seeds, result.final, strict=True)}
    print(f"{NAME}: {arch} {position}: {result.num_params:,} parameters, {len(members)} "
          f"members in {result.seconds:.1f} s (vmapped: {result.vmapped}); test "
          + ", ".join(f"{t} {np.mean(v['test']):.3f}" for t, v in per_task.items()))
    return {"num_params": result.num_params, "train_seconds": result.seconds,
            "vmapped": result.vmapped, "final_train_accuracy": final, "per_task": per_task}


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    if config.encodings[0] != "none" or len(config.encodings) < 2:
        raise ValueError(f"config.encodings must start with 'none' and name at least one "
                         f"positional encoding, got {tuple(config.encodings)}")
    tasks = Tasks(config)
    arms = {arch: {position: train_arm(arch, position, tasks, config, run_dir)
                   for position in config.encodings} for arch in config.archs}
    return {
        "seeds": [int(s) for s in config.seeds],
        "tasks": list(tasks.names),
        "sequence_length": tasks.length,
        "vocab_size": tasks.vocab_size,
        "chance": chance(config),
        "arms": arms,
    }


# --------------------------------------------------------------------------- verdict


def best_on_dev(dev: dict[str, list[float]], encodings) -> list[str]:
    """Per seed, the positional encoding (not "none") with the highest dev accuracy (ties:
    the first in ``encodings``)."""
    candidates = [e for e in encodings if e != "none"]
    n = len(dev[candidates[0]])
    return [max(candidates, key=lambda e, i=i: (dev[e][i], -candidates.index(e)))
            for i in range(n)]


def gaps(numbers: dict, arch: str, task: str, encodings) -> dict:
    """Per seed: the dev-chosen best encoding, its test accuracy, none's, and the gap."""
    per = {e: numbers["arms"][arch][e]["per_task"][task] for e in encodings}
    chosen = best_on_dev({e: p["dev"] for e, p in per.items()}, encodings)
    best = [per[e]["test"][i] for i, e in enumerate(chosen)]
    none = per["none"]["test"]
    return {"chosen": chosen, "best": best, "none": none,
            "gap": [b - z for b, z in zip(best, none, strict=True)]}


def part_tests(numbers: dict, config) -> dict[str, dict]:
    """``{"encoder/precedence": {"passes": [...], "kind": ...}, ...}``: the per-seed test of
    every part of the rule."""
    r = config.rule
    out = {}
    for arch in config.archs:
        for task in numbers["tasks"]:
            g = gaps(numbers, arch, task, config.encodings)
            learned = [b >= r.min_accuracy for b in g["best"]]
            if task == config.control_task:
                kind = "control"
                ok = [abs(x) <= r.control_gap for x in g["gap"]]
            elif arch == "encoder":
                kind = "needed"
                ok = [x >= r.needed_gap for x in g["gap"]]
            else:
                kind = "recovered"
                ok = [x <= r.recovered_gap for x in g["gap"]]
            out[f"{arch}/{task}"] = {
                "kind": kind, "learned": learned, "gap_test": ok,
                "passes": [a and b for a, b in zip(learned, ok, strict=True)], **g}
    return out


def metrics(numbers: dict, config) -> dict:
    """Test accuracy of every arch x task x encoding, and every part's gap, over seeds."""
    out = {}
    for arch in config.archs:
        for task in numbers["tasks"]:
            for e in config.encodings:
                out[f"{arch}_{task}_{e}"] = stats.summary(
                    numbers["arms"][arch][e]["per_task"][task]["test"])
            g = gaps(numbers, arch, task, config.encodings)
            out[f"{arch}_{task}_best"] = stats.summary(g["best"])
            out[f"{arch}_{task}_gap"] = stats.summary(g["gap"])
    return out


def _points(metric: dict) -> str:
    """``"+42.1 [38.0, 45.3]"`` points of a gap record."""
    lo, hi = metric["ci95"]
    return f"{100 * metric['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


PART_TEXT = {"needed": "positions needed", "recovered": "causal mask recovers order",
             "control": "encodings do not matter"}


def _summary(tests: dict, parts: dict, config) -> str:
    """Where positions were needed, where the mask recovered order, whether the control was
    order-free: one sentence from the part verdicts."""
    def tasks_where(arch, kind, holds):
        return [key.split("/")[1] for key, t in tests.items()
                if key.startswith(arch) and t["kind"] == kind
                and (experiment.verdict_class(parts[key]) == "claim holds") == holds]

    def listed(names):
        return ", ".join(names) if names else "none"

    control = [key.split("/")[0] for key, t in tests.items() if t["kind"] == "control"
               and experiment.verdict_class(parts[key]) == "claim holds"]
    return (f"Positions needed (encoder without them far below the best) on: "
            f"{listed(tasks_where('encoder', 'needed', True))}, not on: "
            f"{listed(tasks_where('encoder', 'needed', False))}. The causal mask alone "
            f"recovers the order (decoder without positions close to the best) on: "
            f"{listed(tasks_where('decoder', 'recovered', True))}, not on: "
            f"{listed(tasks_where('decoder', 'recovered', False))}. On the {config.control_task} "
            f"control the encodings do not matter for: {listed(control)}.")


def verdict(numbers: dict, config: ml_collections.ConfigDict) -> dict:
    """``{"verdict", "measured", "parts"}``: a pure function of the numbers and the rule."""
    tests = part_tests(numbers, config)
    m = metrics(numbers, config)
    parts, lines = {}, []
    for key, t in tests.items():
        cls, k_of_n = experiment.seed_verdict(t["passes"], holds_at=config.verdict.holds_at,
                                              fails_at=config.verdict.fails_at)
        parts[key] = cls
        arch, task = key.split("/")
        n = len(t["passes"])
        lines.append(
            f"{key} ({PART_TEXT[t['kind']]}): {cls}, {k_of_n} (gap "
            f"{_points(m[f'{arch}_{task}_gap'])} points, best learned in {sum(t['learned'])} "
            f"of {n}, gap test in {sum(t['gap_test'])} of {n})")
    cls = experiment.combine_verdicts(parts)
    fmt = lambda key: stats.format_summary(m[key], percent=True)  # noqa: E731
    measured = "; ".join(
        f"{arch} {task}: none {fmt(f'{arch}_{task}_none')} vs dev-chosen best "
        f"{fmt(f'{arch}_{task}_best')}"
        for arch in config.archs for task in numbers["tasks"])
    measured = (f"test accuracy, mean [95% interval over {len(numbers['seeds'])} seeds]: "
                f"{measured}.")
    text = f"{cls}: {_summary(tests, parts, config)} Parts: " + "; ".join(lines)
    return {"verdict": text, "measured": measured, "parts": parts}


def published(numbers: dict, config) -> list[dict]:
    m = metrics(numbers, config)
    ours = ", ".join(f"{task} gap {_points(m[f'decoder_{task}_gap'])} points (decoder) vs "
                     f"{_points(m[f'encoder_{task}_gap'])} (encoder)"
                     for task in config.order_tasks)
    return [{
        "source": "Haviv et al. 2022, abstract and sec. 1 (ar5iv 2203.16634)",
        "quote": HAVIV,
        "metric": "causal LM without positions vs with (perplexity)",
        "value": "competitive (NoPos close to sinusoidal, learned and ALiBi)",
        "ours": ours,
        "setting": "theirs: 125M-1.3B causal LMs on natural text, perplexity; ours: "
                   f"{config.transformer.num_layers}-layer width-{config.transformer.model_dim} "
                   "models on synthetic order tasks, accuracy at one read-out position, and "
                   "the same model as a bidirectional encoder",
    }]


# --------------------------------------------------------------------------- report


def table(numbers: dict, config) -> str:
    """One row per architecture x task, one column per encoding: ``mean [lo, hi]`` (%)."""
    m = metrics(numbers, config)
    head = "| arch | task | " + " | ".join(config.encodings) + " | gap (best - none) |"
    rows = [head, "|" + " --- |" * (len(config.encodings) + 3)]
    for arch in config.archs:
        for task in numbers["tasks"]:
            cells = [stats.format_summary(m[f"{arch}_{task}_{e}"], percent=True)
                     for e in config.encodings]
            rows.append(f"| {arch} | {task} | " + " | ".join(cells)
                        + f" | {_points(m[f'{arch}_{task}_gap'])} |")
    return "\n".join(rows)


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> list[str]:
    """Grouped bars: test accuracy per task (groups) and encoding (bars), one panel per
    architecture; error bars = 95% interval over seeds, dots = seeds, dotted = chance."""
    m = metrics(numbers, config)
    tasks, encodings = numbers["tasks"], list(config.encodings)
    figure = Figure(figsize=(5 * len(config.archs), 3.8))
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(1, len(config.archs), sharey=True))
    width = 0.8 / len(encodings)
    for ax, arch in zip(axes, config.archs, strict=True):
        for j, e in enumerate(encodings):
            x = np.arange(len(tasks)) + (j - (len(encodings) - 1) / 2) * width
            records = [m[f"{arch}_{t}_{e}"] for t in tasks]
            means = np.array([r["mean"] for r in records])
            lo = means - np.array([r["ci95"][0] for r in records])
            hi = np.array([r["ci95"][1] for r in records]) - means
            ax.bar(x, means, width, yerr=[lo, hi], color=f"C{j}", alpha=0.75, label=e,
                   capsize=2)
            for xi, r in zip(x, records, strict=True):
                ax.plot([xi] * len(r["per_seed"]), r["per_seed"], "k.", ms=3)
        for i, t in enumerate(tasks):
            ax.hlines(numbers["chance"][t], i - 0.45, i + 0.45, colors="grey", linestyles=":")
        ax.set_xticks(range(len(tasks)),
                      [f"{t}\n({'control' if t == config.control_task else 'order'})"
                       for t in tasks])
        ax.set(title=f"{arch} ({'bidirectional' if arch == 'encoder' else 'causal'})",
               ylim=(0, 1.05), ylabel="test accuracy" if arch == config.archs[0] else None)
    axes[0].legend(fontsize=7, title="position", title_fontsize=7)
    figure.suptitle("Accuracy per position encoding (dots: seeds; dotted: chance)", fontsize=9)
    figure.tight_layout()
    path = run_dir.figure_path(NAME)
    figure.savefig(path, dpi=100)
    return [path.name]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    text = table(numbers, config)
    print(text)
    return {
        "claim": CLAIM,
        "rule": rule(config),
        **verdict(numbers, config),
        "seeds": numbers["seeds"],
        "metrics": metrics(numbers, config),
        "headline": [f"{arch}_{task}_gap" for arch in config.archs for task in numbers["tasks"]],
        "table": text,
        "published": published(numbers, config),
        "published_note": HAVIV,
        "figures": plot(numbers, config, run_dir),
        **numbers,
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
