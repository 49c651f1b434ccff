"""The fading memory of recurrence, against attention's direct connections.

An RNN must carry "trophy" through every later step to resolve "it"; attention lets "it"
look straight back. Measured on recall at a distance (``attnjax.data.recall.distance_batch``):
a key token sits ``d`` tokens before the query at the end of a fixed-length sequence of noise,
and the model must name it at the query. One model per architecture and seed is trained on
keys at every distance 1..length-1 and tested at each test distance, so a drop of accuracy
with ``d`` is the fading itself, not a change of task or sequence length.

Arms: a vanilla (Elman) RNN, a GRU, an LSTM (one left-to-right layer each) and a transformer
encoder, all read out at the last token by the same classifier head
(``attnjax.nn.PositionClassifier``); each RNN's hidden width is chosen so that its parameter
count matches the transformer's (printed). Equal tuning: every arm trains at every rate of the
same grid ``config.learning_rates`` (seeds x rates as one vmapped program per arm), and each
seed keeps the rate with the best accuracy on a dev draw; test draws only report.

Also, with seeds: ``|d loss / d x_{T-d}|``, the gradient of the loss with respect to the
input embedding ``d`` tokens before the readout, at initialisation and trained
(``attnjax.analysis.input_gradient_norms``): the mechanism behind the fading.

The coreference-by-distance curves of earlier versions are not part of this experiment any
more: recall isolates distance (coreference accuracy also depends on learning the relations,
see ``experiments/coreference.py``).

    python -m experiments.fading_memory [--config configs/fading_memory.py[:tour|smoke]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, nn, stats, train
from attnjax.data import recall
from attnjax.train import SeedRngs
from experiments import REGISTRY

NAME = "fading_memory"
CLAIM = REGISTRY[NAME].claim
LABELS = {"simple": "vanilla RNN", "gru": "GRU", "lstm": "LSTM", "transformer": "transformer"}
RULE = (
    "per architecture and seed (each seed with the learning rate of the shared grid "
    "{learning_rates} that is best on dev): 'fades' = test recall accuracy with the key "
    "{shortest} token(s) back minus with it {longest} tokens back >= {fade_drop:.0%}. Each RNN's "
    "part holds if it fades in >= {holds_at:.0%} of seeds, does not hold if in <= "
    "{fails_at:.0%}, else mixed; the transformer's part holds if it does not fade and is >= "
    "{transformer_min_accuracy:.0%} accurate at every test distance, with the same seed "
    "fractions. The RNN parts combine as: all hold = holds, none holds = does not hold, else "
    "mixed; the claim holds if the RNNs and the transformer both hold, does not hold if "
    "either does not hold, else mixed"
)
RANK = {"claim does not hold here": 0, "mixed": 1, "claim holds": 2}


def rule(config: ml_collections.ConfigDict) -> str:
    distances = tuple(config.recall.test_distances)
    return RULE.format(learning_rates=list(config.learning_rates), shortest=min(distances),
                       longest=max(distances), **config.bars, **config.verdict)


def num_params(model: nn.PositionClassifier, length: int) -> int:
    tokens = jnp.zeros((1, length), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens, jnp.zeros((1,), jnp.int32))
    return train.num_params(shapes["params"])


def build(name: str, config: ml_collections.ConfigDict, vocab_size: int, max_len: int,
          num_classes: int, hidden_dim: int | None = None) -> nn.PositionClassifier:
    """The transformer encoder or a one-layer left-to-right RNN behind one classifier head."""
    t = config.transformer
    if name == "transformer":
        encoder = nn.Encoder(nn.TransformerConfig(
            vocab_size=vocab_size, model_dim=t.model_dim, num_heads=t.num_heads,
            num_layers=t.num_layers, mlp_dim=t.mlp_dim, dropout_rate=t.dropout_rate,
            position=t.position, max_len=max_len,
        ))
        return nn.PositionClassifier(encoder, num_classes)
    encoder = nn.RecurrentStates(nn.RNNConfig(
        vocab_size=vocab_size, embed_dim=t.model_dim, hidden_dim=hidden_dim, cell=name,
        dropout_rate=t.dropout_rate,
    ))
    # The head's width is the transformer's, so only the encoders differ in size.
    return nn.PositionClassifier(encoder, num_classes, hidden_dim=t.model_dim)


def matched_models(config, vocab_size: int, max_len: int, num_classes: int) -> dict:
    """``config.models``, each RNN's hidden width chosen so its parameter count is closest
    to the transformer's."""
    transformer = build("transformer", config, vocab_size, max_len, num_classes)
    target = num_params(transformer, 8)
    models = {}
    for name in config.models:
        if name == "transformer":
            models[name] = transformer
            continue
        # The count is a quadratic in the width h (h^2 recurrent weights, h times the input
        # and head widths, biases): three widths determine it, then solve for the target.
        widths = np.array([8.0, 16.0, 32.0])
        counts = [num_params(build(name, config, vocab_size, max_len, num_classes, int(h)), 8)
                  for h in widths]
        a, b, c = np.polyfit(widths, counts, 2)
        root = max(np.roots([a, b, c - target]).real)
        hidden = int(min((np.floor(root), np.ceil(root)),
                         key=lambda h: abs(np.polyval([a, b, c], h) - target)))
        models[name] = build(name, config, vocab_size, max_len, num_classes, max(hidden, 1))
    return models


def draw(config, seed: int, stream: int, n: int, distances) -> dict:
    """``n`` recall sequences of seed ``seed``'s data draw (stream 0 = training, with the
    step appended; 1 = dev; 2 = test)."""
    r = config.recall
    return recall.distance_batch([SeedRngs(seed).int("data_draw"), *np.atleast_1d(stream)], n,
                                 r.length, distances, num_keys=r.num_keys,
                                 num_noise=r.num_noise)


def accuracy(model, params, arrays: dict) -> float:
    predictions = train.predict(model, params, arrays, "last").argmax(-1)
    return float(np.mean(predictions == arrays["label"]))


def gradient_by_distance(model, params, arrays) -> list[float]:
    """Mean ``|d loss / d x|`` at distance ``d = 0 .. L-1`` from the readout (the last
    token, ``d = 0``)."""
    norms = jax.jit(lambda p, t, q, y: analysis.input_gradient_norms(model, {"params": p}, t,
                                                                     q, y))(
        params, arrays["tokens"], arrays["last"], arrays["label"])
    return np.asarray(norms).mean(axis=0)[::-1].tolist()


def measure_arm(name: str, model, config, run_dir) -> dict:
    """Train ``model`` for every seed x learning rate, choose each seed's rate on dev,
    report the test curve and the gradient by distance."""
    r = config.recall
    every = range(1, r.length)
    example = draw(config, 0, 1, 2, every)
    init = lambda key: model.init(key, example["tokens"], example["last"])["params"]
    keys = ("tokens", "label", "last")
    result = train.train(
        name=name, seeds=[int(s) for s in config.seeds], config=config.train, init=init,
        loss_fn=train.classification_loss_fn(model, "last"),
        batches=lambda rngs, step: {k: v for k, v in draw(
            config, rngs.seed, (0, step), int(config.train.batch_size), every).items()
            if k in keys},
        run_dir=run_dir, learning_rates=list(config.learning_rates),
        vmap_seeds=config.vmap_seeds, parallel=config.parallel,
        stop_when=lambda record: record.get("token_accuracy", 0.0) >= r.stop_at_accuracy,
    )
    print(f"{LABELS[name]}: {result.num_params:,} parameters, {len(result.members)} runs "
          f"({'vmapped' if result.vmapped else 'one after another'}), {result.seconds:.0f} s")
    per_seed = []
    for seed in [int(s) for s in config.seeds]:
        dev = draw(config, seed, 1, r.num_dev, every)
        dev_accuracy = {m.learning_rate: accuracy(model, p, dev)
                        for m, p in zip(result.members, result.params, strict=True)
                        if m.seed == seed}
        rate = max(dev_accuracy, key=dev_accuracy.get)
        params = result.member_params(seed, rate)
        tests = {d: draw(config, seed, (2, d), r.num_test, [d]) for d in r.test_distances}
        longest = tests[max(r.test_distances)]
        probe = {k: longest[k][: r.num_gradient_examples] for k in keys}
        per_seed.append({
            "seed": seed,
            "learning_rate": rate,
            "dev_accuracy_by_learning_rate": {f"{k:g}": v for k, v in dev_accuracy.items()},
            "accuracy_by_distance": {d: accuracy(model, params, a) for d, a in tests.items()},
            "gradient_by_distance": {
                "init": gradient_by_distance(model, jax.jit(init)(SeedRngs(seed).key("init")),
                                             probe),
                "trained": gradient_by_distance(model, params, probe),
            },
        })
    return {"num_params": result.num_params, "train_seconds": result.seconds,
            "steps": max(int(f.get("step", 0)) for f in result.final),
            "vmapped": result.vmapped, "per_seed": per_seed}


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    unknown = set(config.models) - set(LABELS)
    if unknown or "transformer" not in config.models:
        raise ValueError(f"config.models must include 'transformer' and be among {tuple(LABELS)}, "
                         f"got {tuple(config.models)}")
    r = config.recall
    models = matched_models(config, recall.vocab_size(r.num_keys, r.num_noise), r.length,
                            r.num_keys)
    counts = {name: num_params(m, 8) for name, m in models.items()}
    print("parameters: " + ", ".join(f"{LABELS[n]} {c:,}" for n, c in counts.items()))
    arms = {name: measure_arm(name, model, config, run_dir) for name, model in models.items()}
    return {"seeds": [int(s) for s in config.seeds], "num_params": counts,
            "num_keys": int(r.num_keys), "arms": arms}


def curve(entry: dict) -> tuple[list[int], np.ndarray]:
    """Test distances and ``[seeds, distances]`` accuracies of one arm."""
    # int(): keys are ints in a run, strings once read back from results.json.
    distances = sorted(int(d) for d in entry["per_seed"][0]["accuracy_by_distance"])
    values = np.array([[dict((int(k), v) for k, v in s["accuracy_by_distance"].items())[d]
                        for d in distances] for s in entry["per_seed"]])
    return distances, values


def metrics(numbers: dict) -> dict:
    out = {}
    for name, entry in numbers["arms"].items():
        _, acc = curve(entry)
        out[f"{name}_accuracy_drop"] = stats.summary(acc[:, 0] - acc[:, -1])
        out[f"{name}_accuracy_shortest"] = stats.summary(acc[:, 0])
        out[f"{name}_accuracy_longest"] = stats.summary(acc[:, -1])
        out[f"{name}_accuracy_worst"] = stats.summary(acc.min(axis=1))
        # log10 of the trained gradient at the longest distance over that at distance 1.
        ratio = [np.log10(max(g[-1], 1e-30) / max(g[1], 1e-30)) for g in (
            s["gradient_by_distance"]["trained"] for s in entry["per_seed"])]
        out[f"{name}_log10_gradient_survival"] = stats.summary(ratio)
    return out


def verdict(numbers: dict, config: ml_collections.ConfigDict) -> dict:
    bars, v = config.bars, config.verdict
    m = metrics(numbers)
    parts, texts = {}, []
    for name in numbers["arms"]:
        drop = m[f"{name}_accuracy_drop"]
        if name == "transformer":
            worst = m[f"{name}_accuracy_worst"]["per_seed"]
            passes = [d < bars.fade_drop and w >= bars.transformer_min_accuracy
                      for d, w in zip(drop["per_seed"], worst, strict=True)]
            test = "holds on (no fade, accurate everywhere)"
        else:
            passes = [d >= bars.fade_drop for d in drop["per_seed"]]
            test = "fades"
        cls, k_of_n = experiment.seed_verdict(passes, holds_at=v.holds_at, fails_at=v.fails_at)
        parts[name] = cls
        texts.append(f"{LABELS[name]} {test}: {cls}, holds in {k_of_n} (accuracy drop "
                     f"{stats.format_summary(drop, percent=True)})")
    rnns = {n: c for n, c in parts.items() if n != "transformer"}
    rnn = experiment.combine_verdicts(rnns) if rnns else "claim does not hold here"
    overall = min((rnn, parts["transformer"]), key=RANK.__getitem__)
    text = f"{overall}: " + "; ".join(texts) + " (mean [95% interval over seeds])"
    distances = tuple(config.recall.test_distances)
    measured = "; ".join(
        f"{LABELS[name]} ({numbers['num_params'][name]:,} params) recall "
        f"{stats.format_summary(m[f'{name}_accuracy_shortest'], percent=True)} with the key "
        f"{min(distances)} back vs "
        f"{stats.format_summary(m[f'{name}_accuracy_longest'], percent=True)} {max(distances)} "
        f"back, log10 gradient survival "
        f"{stats.format_summary(m[f'{name}_log10_gradient_survival'], fmt='.1f')}"
        for name in numbers["arms"]
    ) + f" (over {len(numbers['seeds'])} seeds)"
    return {"verdict": text, "measured": measured, "parts": parts}


def plot(numbers: dict, config, run_dir) -> list[str]:
    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for i, (name, entry) in enumerate(numbers["arms"].items()):
        colour = f"C{i}"
        distances, acc = curve(entry)
        for row in acc:  # every seed, thin
            left.plot(distances, row, color=colour, lw=0.7, alpha=0.5)
        left.plot(distances, acc.mean(0), "o-", color=colour, label=LABELS[name])
        trained = np.mean([s["gradient_by_distance"]["trained"] for s in entry["per_seed"]], 0)
        initial = np.mean([s["gradient_by_distance"]["init"] for s in entry["per_seed"]], 0)
        d = np.arange(1, len(trained))
        right.plot(d, trained[1:], color=colour, label=f"{LABELS[name]} trained")
        right.plot(d, initial[1:], color=colour, ls="--", lw=1, label=f"{LABELS[name]} init")
    left.axhline(1.0 / numbers["num_keys"], color="grey", ls="--", lw=1)  # chance
    left.set(xscale="log", xlabel="tokens between the key and the query",
             ylabel="test accuracy", ylim=(0.0, 1.02),
             title="Recall at a distance (thin: seeds, thick: mean)")
    left.legend()
    right.set(yscale="log", xscale="log", xlabel="distance d from the readout",
              ylabel="|d loss / d x_{T-d}| (mean over seeds)",
              title="Gradient reaching back d tokens")
    right.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path = run_dir.figure_path("fading_memory")
    figure.savefig(path, dpi=110)
    return [path.name]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    return {
        "claim": CLAIM,
        "rule": rule(config),
        **verdict(numbers, config),
        "metrics": metrics(numbers),
        "headline": ["simple_accuracy_drop", "lstm_accuracy_drop", "transformer_accuracy_drop"]
        if "simple" in numbers["arms"] else
        [f"{n}_accuracy_drop" for n in list(numbers["arms"])[:3]],
        "published": [],
        "published_note": "no published figure for this synthetic recall task",
        "figures": plot(numbers, config, run_dir),
        **numbers,
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
