"""The fading memory of recurrence, against attention's direct connections.

An RNN must carry "trophy" through every later step to resolve "it"; attention lets "it"
look straight back. Three measurements, each for a vanilla (Elman) RNN, a GRU, an LSTM and a
transformer encoder of matched parameter count, all read out at the last token by the same
classifier head (``attnjax.nn.PositionClassifier``):

1. coreference: antecedent accuracy vs filler distance (``attnjax.data.coreference``);
2. recall: a key at the start reproduced at the end of a sequence of length 16 ... 512
   (``attnjax.data.recall``), one model trained per length;
3. fading, directly: ``|d loss / d x_{T-d}|``, the gradient of the output w.r.t. the input
   embedding at distance ``d`` from the readout, at initialisation and after training on
   the longest recall task (``attnjax.analysis.input_gradient_norms``).

Recurrent baselines are tuned: each trains at every learning rate of ``rnn_learning_rates``
and the rate with the best validation accuracy (a fresh draw, not the test set) is kept: per
coreference run, and for recall at ``recall.tune_length`` (then reused at every length). Each
RNN's hidden width matches the transformer's parameter count.

    python -m experiments.fading_memory [--config configs/fading_memory.py[:full|smoke]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from attnjax import analysis, experiment, nn, train
from attnjax.data import coreference, recall
from experiments import REGISTRY

NAME = "fading_memory"
CLAIM = REGISTRY[NAME].claim
RNN_CELLS = ("simple", "gru", "lstm")
LABELS = {"simple": "vanilla RNN", "gru": "GRU", "lstm": "LSTM", "transformer": "transformer"}


def num_params(model: nn.PositionClassifier, length: int) -> int:
    tokens = jnp.zeros((1, length), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens, jnp.zeros((1,), jnp.int32))
    return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes["params"])))


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


def train_tuned(name, model, arrays, validation, config, run_dir, tag, rates=None,
                num_steps=None, batch_size=None, stop_at_accuracy=None) -> tuple:
    """Train at each learning rate of ``rates`` (default: the RNN sweep, or the
    transformer's one rate); keep the best by validation accuracy. ``num_steps`` and
    ``batch_size`` default to ``config.train``'s. Returns ``(params, info)``."""
    tc = config.train
    if rates is None:
        rates = (tc.learning_rate,) if name == "transformer" else tuple(tc.rnn_learning_rates)
    best = None
    for rate in rates:
        params, info = train.fit_classifier(
            model, arrays, position_key="last", num_steps=num_steps or tc.num_steps,
            batch_size=batch_size or tc.batch_size, learning_rate=rate, seed=config.seed,
            warmup_steps=tc.warmup_steps, log_every=tc.log_every,
            log=lambda r, rate=rate: run_dir.log({"task": tag, "model": name, "lr": rate, **r}),
            checkpoint_dir=run_dir.path / "checkpoints" / f"{tag}_{name}_{rate:g}",
            checkpoint_every=tc.checkpoint_every, description=f"{tag} {name} lr={rate:g}",
            stop_at_accuracy=stop_at_accuracy,
        )
        accuracy = accuracy_of(model, params, validation)
        info = {**info, "learning_rate": rate, "validation_accuracy": accuracy}
        if best is None or accuracy > best[1]["validation_accuracy"]:
            best = (params, info)
    best[1]["tried_learning_rates"] = list(rates)
    return best


def accuracy_of(model, params, arrays) -> float:
    predictions = train.predict(model, params, arrays, "last").argmax(-1)
    return float(np.mean(predictions == arrays["label"]))


def coreference_curves(config, run_dir) -> dict:
    """Antecedent accuracy vs filler distance for every model."""
    data = coreference.make_datasets(config.coreference)
    classes = len(data["vocab"]) if config.coreference.readout == "identity" else 2
    models = matched_models(config, len(data["vocab"]), data["length"], classes)
    out = {}
    for name, model in models.items():
        params, info = train_tuned(
            name, model, data["train"], data["validation"], config, run_dir, "coreference"
        )
        out[name] = {
            **info,
            "accuracy_by_filler_tokens": {
                d: accuracy_of(model, params, arrays) for d, arrays in data["test"].items()
            },
        }
    return out


def recall_curves(config, run_dir) -> tuple[dict, dict]:
    """Recall accuracy vs sequence length; and gradient norms vs distance at the longest
    length, at initialisation and trained."""
    r = config.recall
    vocab = recall.vocab_size(r.num_keys, r.num_noise)
    batch = lambda stream, n, length: recall.recall_batch(
        [config.seed, stream, length], n, length, num_keys=r.num_keys, num_noise=r.num_noise
    )
    longest = max(r.lengths)
    models = matched_models(config, vocab, longest, r.num_keys)
    curves = {name: {} for name in models}
    gradients = {}
    # The RNNs' learning rate is tuned at one length (on validation draws) and kept for the
    # others: a sweep at every length would cost the sweep's size times more.
    rates = {}
    for length in sorted(r.lengths, key=lambda n: n != r.tune_length):
        train_set, validation, test = (
            batch(0, r.num_train, length), batch(1, r.num_test, length),
            batch(2, r.num_test, length),
        )
        for name, model in models.items():
            params, info = train_tuned(
                name, model, train_set, validation, config, run_dir, f"recall{length}",
                rates=rates.get(name), num_steps=r.num_steps, batch_size=r.batch_size,
                stop_at_accuracy=r.stop_at_accuracy,
            )
            rates.setdefault(name, (info["learning_rate"],))
            curves[name][length] = {**info, "test_accuracy": accuracy_of(model, params, test)}
            if length == longest:
                probe = {k: test[k][: r.num_gradient_examples] for k in test}
                initial = jax.jit(model.init)(
                    jax.random.key(config.seed), probe["tokens"][:1], probe["last"][:1]
                )
                trained = {"params": params}
                gradients[name] = {
                    "init": gradient_by_distance(model, initial, probe),
                    "trained": gradient_by_distance(model, trained, probe),
                }
    curves = {name: dict(sorted(c.items())) for name, c in curves.items()}
    return curves, gradients


def gradient_by_distance(model, variables, arrays) -> list[float]:
    """Mean ``|d loss / d x|`` at distance ``d = 0 .. L-1`` from the readout (the last
    token, ``d = 0``)."""
    norms = jax.jit(lambda v, t, p, y: analysis.input_gradient_norms(model, v, t, p, y))(
        variables, arrays["tokens"], arrays["last"], arrays["label"]
    )
    return np.asarray(norms).mean(axis=0)[::-1].tolist()


def plot(results: dict, run_dir) -> list[str]:
    figure = Figure(figsize=(16, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    ax = axes[0]
    for name, entry in results["coreference"].items():
        curve = entry["accuracy_by_filler_tokens"]
        # int(): keys are ints in a run, strings once read back from results.json.
        ax.plot([int(d) for d in curve], list(curve.values()), "o-", label=LABELS[name])
    ax.axhline(0.75, color="grey", ls=":", lw=1)
    ax.set(xlabel="filler tokens between the clause and the pronoun", ylabel="accuracy",
           title="Coreference (held-out pairs and templates)", ylim=(0.4, 1.02))
    ax.legend()
    ax = axes[1]
    for name, curve in results["recall"].items():
        ax.plot([int(n) for n in curve], [c["test_accuracy"] for c in curve.values()], "o-",
                label=LABELS[name])
    ax.axhline(0.75, color="grey", ls=":", lw=1)
    ax.axhline(1.0 / results["num_keys"], color="grey", ls="--", lw=1)  # chance
    ax.set(xlabel="sequence length (key at the start)", ylabel="accuracy",
           title="Recall the first token at the end", ylim=(0.0, 1.02))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks([int(n) for n in next(iter(results["recall"].values()))])
    ax.get_xaxis().set_major_formatter("{x:.0f}")
    ax.legend()
    ax = axes[2]
    for i, (name, g) in enumerate(results["gradients"].items()):
        colour = f"C{i}"
        d = np.arange(1, len(g["trained"]))
        ax.plot(d, g["trained"][1:], color=colour, label=f"{LABELS[name]} trained")
        ax.plot(d, g["init"][1:], color=colour, ls="--", lw=1, label=f"{LABELS[name]} init")
    ax.set(yscale="log", xscale="log", xlabel="distance d from the readout",
           ylabel="|d loss / d x_{T-d}|", title="Gradient reaching back d tokens")
    ax.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path = run_dir.figure_path("fading_memory")
    figure.savefig(path, dpi=110)
    return [path.name]


def first_below(curve: dict, bar: float):
    """The first x whose accuracy is below ``bar``, or None."""
    return next((x for x, a in curve.items() if a < bar), None)


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    unknown = set(config.models) - set(LABELS)
    if unknown or "transformer" not in config.models:
        raise ValueError(f"config.models must include 'transformer' and be among {tuple(LABELS)}, "
                         f"got {tuple(config.models)}")
    results = {"num_keys": config.recall.num_keys}
    results["coreference"] = coreference_curves(config, run_dir)
    results["recall"], results["gradients"] = recall_curves(config, run_dir)
    results["num_params"] = {
        name: entry["num_params"] for name, entry in results["coreference"].items()
    }
    results["recall_num_params"] = {
        name: next(iter(curve.values()))["num_params"] for name, curve in results["recall"].items()
    }
    results["figures"] = plot(results, run_dir)
    results.update(verdict_of(results, config))
    return results


def verdict_of(results: dict, config: ml_collections.ConfigDict) -> dict:
    bar = config.bars.fail_below
    parts, fades, direct = [], [], []
    longest = max(config.recall.lengths)
    for name in results["coreference"]:
        coref = results["coreference"][name]["accuracy_by_filler_tokens"]
        rec = {n: c["test_accuracy"] for n, c in results["recall"][name].items()}
        g = np.asarray(results["gradients"][name]["trained"])
        # How much of the gradient at distance 1 survives at the longest distance.
        survival = float(g[-1] / max(g[1], 1e-30))
        below_coref, below_recall = first_below(coref, bar), first_below(rec, bar)
        parts.append(
            f"{LABELS[name]}: coreference {min(coref.values()):.0%}-{max(coref.values()):.0%}"
            f" (below {bar:.0%} from {below_coref} filler tokens)"
            if below_coref is not None
            else f"{LABELS[name]}: coreference >= {min(coref.values()):.0%} at every distance"
        )
        parts[-1] += (
            f", recall below {bar:.0%} from length {below_recall}"
            if below_recall is not None
            else f", recall >= {min(rec.values()):.0%} up to length {longest}"
        ) + f", gradient at d={len(g) - 1} / d=1: {survival:.1e}"
        ok = below_coref is None and below_recall is None
        (direct if name == "transformer" else fades).append((name, ok, survival))
    measured = "; ".join(parts)
    rnn_fades = any(not ok or s < config.bars.faded for _, ok, s in fades)
    attention_direct = all(ok and s >= config.bars.faded for _, ok, s in direct)
    if rnn_fades and attention_direct:
        verdict = ("claim holds: recurrent accuracy or gradient fades with distance while "
                   "the transformer's does not")
    elif attention_direct:
        verdict = "mixed: the transformer holds at every distance, but no RNN fades here"
    elif rnn_fades:
        verdict = "mixed: RNNs fade, but the transformer also falls short at some distance"
    else:
        verdict = "claim does not hold: no model fades with distance"
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


if __name__ == "__main__":
    experiment.main(NAME, run)
