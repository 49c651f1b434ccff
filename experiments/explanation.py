"""Is high attention weight high importance? (Jain & Wallace 2019, "Attention is not
Explanation"; Wiegreffe & Pinter 2019, "Attention is not not Explanation")

A small transformer classifier (``nn.PositionClassifier`` reading the CLS position of an
``nn.Encoder``) learns the toy sentiment task of ``attnjax.data.sentiment``: one polarity
word among fillers, flipped by a "not" just before it (with a distracting "not" elsewhere
in ``distractor_rate`` of the sentences), so the gold evidence is known. Every seed
draws its own sentences, initialisation and batch order; the seeds train vmapped. On each
seed's test sentences, for **every layer** ``l``:

* agreement with importance measured without attention: Kendall tau between the CLS row of
  layer ``l`` (mean over heads) and |gradient x input| and |leave-one-out| on the margin of
  the predicted class (``analysis.gradient_x_input``, ``analysis.leave_one_out``), beside
  the tau between the two importance measures; how often the most attended token is the
  gold evidence;
* random permutation: every attention row of layer ``l`` (each head) shuffled over the keys
  (``analysis.with_attention_weights``): the change in the predicted probability;
* adversarial attention: Adam on layer ``l``'s attention logits (the last layer: its CLS
  row, the only row the output reads; earlier layers: every row) for a distribution as far
  as possible from the original (Jensen-Shannon divergence, nats, max ln 2) that keeps the
  predicted probability within ``epsilon``;
* uniform attention (Wiegreffe & Pinter 2019, sec. 3.1): layer ``l``'s attention (and, as a
  last row, every layer's) replaced by uniform weights over the valid tokens at test time;
  and the control they propose: the same model *trained* with its attention frozen to
  uniform in every layer. If it does as well, the task does not need attention and the
  counterfactual tests say little about attention.

The verdict is the pre-registered ``RULE`` (per seed, then ``seed_verdict``).

    python -m experiments.explanation [--config configs/explanation.py[:tour|smoke]]
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, nn, stats, train
from attnjax.data.sentiment import PAD_ID, SentimentTask
from attnjax.train.per_seed import per_seed_batches
from experiments import REGISTRY

NAME = "explanation"
CLAIM = REGISTRY[NAME].claim
RULE = (
    "per seed, on its test sentences: (A) attention disagrees with measured importance: in "
    "every layer, the mean Kendall tau between the CLS row's attention (mean over heads) and "
    "|leave-one-out| is at least {agree_margin} below the tau between |gradient x input| and "
    "|leave-one-out|; (B) very different attention gives the same output: in every layer, an "
    "adversarial attention that keeps the predicted probability within {epsilon} reaches "
    "JSD >= {large_jsd} nats for >= {adversarial_fraction:.0%} of sentences. A seed passes "
    "if A and B. The claim does not hold if <= {fails_at:.0%} of seeds pass; it holds if >= "
    "{holds_at:.0%} pass AND, in >= {holds_at:.0%} of seeds, attention is needed (the "
    "control of Wiegreffe & Pinter 2019: the model trained with attention frozen to uniform "
    "scores >= {uniform_gap:.0%} below the trained-attention model), else mixed (the "
    "counterfactuals would then be vacuous)"
)


def rule_text(config) -> str:
    return RULE.format(epsilon=config.adversarial.epsilon, **config.verdict)


def build(config, task: SentimentTask) -> nn.PositionClassifier:
    m = config.model
    cfg = nn.TransformerConfig(
        vocab_size=task.vocab_size, model_dim=m.model_dim, num_heads=m.num_heads,
        num_layers=m.num_layers, mlp_dim=2 * m.model_dim, max_len=task.length + 1,
        dropout_rate=0.0, position="learned", pre_ln=True,
    )
    return nn.PositionClassifier(nn.Encoder(cfg), num_classes=2)


def uniform_weights(tokens: jax.Array, num_heads: int) -> jax.Array:
    """``[B, H, T, T]`` attention spread evenly over each sentence's valid (non-pad) keys."""
    valid = (tokens != PAD_ID).astype(jnp.float32)  # [B, S]
    row = valid / jnp.maximum(valid.sum(-1, keepdims=True), 1.0)
    b, t = tokens.shape
    return jnp.broadcast_to(row[:, None, None, :], (b, num_heads, t, t))


@dataclasses.dataclass(frozen=True)
class UniformAttention:
    """``model`` with the attention of ``paths`` frozen to uniform (Wiegreffe & Pinter 2019,
    sec. 3.1): the same parameters and ``apply`` signature, so it trains and predicts like
    the model itself."""

    model: nn.PositionClassifier
    paths: tuple[str, ...]
    num_heads: int

    def init(self, *args, **kwargs):
        return self.model.init(*args, **kwargs)

    def apply(self, variables, tokens, position, **kwargs):
        weights = uniform_weights(tokens, self.num_heads)
        return analysis.with_attention_weights(self.model, variables, tokens, position,
                                               weights={p: weights for p in self.paths},
                                               **kwargs)


def jsd(p: jax.Array, q: jax.Array) -> jax.Array:
    """Jensen-Shannon divergence (nats) over the last axis."""
    m = 0.5 * (p + q)
    kl = lambda a, b: jnp.sum(jnp.where(a > 0, a * (jnp.log(a + 1e-12) - jnp.log(b + 1e-12)),  # noqa: E731
                                        0.0), axis=-1)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


@jax.jit
def permute_rows(key: jax.Array, weights: jax.Array) -> jax.Array:
    """``weights [N, H, T, S]`` with every row (each head, each query) shuffled over S."""
    n, h, t, s = weights.shape
    keys = jax.random.split(key, n * h * t)
    order = jax.vmap(lambda k: jax.random.permutation(k, s))(keys)
    return jnp.take_along_axis(weights.reshape(-1, s), order, axis=1).reshape(weights.shape)


# --------------------------------------------------------------------------- measure


def seed_data(config, task: SentimentTask, seeds) -> dict[int, dict]:
    """Per seed: train and test sentences from its ``data_draw`` stream."""
    out = {}
    for seed in seeds:
        rng = train.SeedRngs(seed).numpy("data_draw")
        out[seed] = {"train": task.sample(rng, config.num_train),
                     "test": task.sample(rng, config.num_test)}
    return out


def train_arm(name, model, config, data, run_dir):
    keys = ("tokens", "label", "position")
    seeds = list(config.seeds)
    example = data[seeds[0]]["train"]
    return train.train(
        name=name, seeds=seeds, config=config.train,
        init=lambda key: model.init(key, example["tokens"][:2], example["position"][:2])["params"],
        loss_fn=train.classification_loss_fn(model, "position"),
        batches=per_seed_batches({s: {k: data[s]["train"][k] for k in keys} for s in seeds},
                                 int(config.train.batch_size)),
        run_dir=run_dir, vmap_seeds=config.vmap_seeds)


@functools.partial(jax.jit, static_argnums=0)
def probability_with(model, params, tokens, position, predicted, new_weights: dict):
    """``(probability of the predicted class [N], new prediction [N])`` with the attention
    maps of ``new_weights`` (``{path: [N, H, T, S]}``) put in (params are an argument:
    every seed reuses one compilation)."""
    out = analysis.with_attention_weights(model, {"params": params}, tokens, position,
                                          weights=new_weights)
    return jax.nn.softmax(out, -1)[jnp.arange(len(predicted)), predicted], out.argmax(-1)


@functools.partial(jax.jit, static_argnames=("model", "path", "cls_only", "epsilon",
                                             "penalty", "learning_rate"))
def _adversarial_step(z, state, params, tokens, position, predicted, probability, original,
                      *, model, path, cls_only, epsilon, penalty, learning_rate):
    rows = slice(0, 1) if cls_only else slice(None)
    optimizer = optax.adam(learning_rate)

    def objective(z):
        new = jax.nn.softmax(z, -1)
        divergence = jsd(new, original[:, :, rows, :]).mean(axis=(1, 2))  # [N]: heads, rows
        p, _ = probability_with(model, params, tokens, position, predicted,
                                {path: original.at[:, :, rows, :].set(new)})
        drift = jnp.abs(p - probability)
        return jnp.sum(-divergence + penalty * jnp.maximum(drift - epsilon, 0.0)), (
            divergence, drift)

    (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(z)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(z, updates), state, aux


def adversarial_attention(model, params, inputs, path, original, cls_only, key, config):
    """Per sentence: the largest JSD from ``original [N, H, T, S]`` (the CLS row only, or
    every row) of an attention of layer ``path`` whose predicted probability stays within
    ``epsilon`` (Jain & Wallace 2019, sec. 4.2; Adam on the logits, a hinge penalty).
    ``inputs``: ``(tokens, position, predicted, probability)``."""
    a = config.adversarial
    target = original[:, :, :1, :] if cls_only else original
    z = jnp.log(target + 1e-6) + a.init_noise * jax.random.normal(key, target.shape)
    state = optax.adam(a.learning_rate).init(z)
    best = np.zeros(original.shape[0])
    for _ in range(a.steps):
        z, state, (divergence, drift) = _adversarial_step(
            z, state, params, *inputs, original, model=model, path=path, cls_only=cls_only,
            epsilon=a.epsilon, penalty=a.penalty, learning_rate=a.learning_rate)
        ok = np.asarray(drift) <= a.epsilon
        best = np.where(ok, np.maximum(best, np.asarray(divergence)), best)
    return best


def measure_seed(config, model, params, uniform_params, test, seed, paths) -> dict:
    variables = {"params": params}
    tokens, position = jnp.asarray(test["tokens"]), jnp.asarray(test["position"])
    logits, maps = analysis.capture_attention(model, variables, tokens, position)
    predicted = jnp.argmax(logits, -1)
    rows = jnp.arange(len(predicted))
    probability = jax.nn.softmax(logits, -1)[rows, predicted]
    label = np.asarray(test["label"])

    def margin(out):  # predicted-class margin: what the evidence should explain
        sign = jnp.where(predicted == 1, 1.0, -1.0)
        return sign * (out[:, 1] - out[:, 0])

    x, score = analysis.embedding_function(model, variables, tokens, position, output=margin)
    gxi = np.abs(np.asarray(analysis.gradient_x_input(score, x)))
    loo = np.abs(np.asarray(analysis.leave_one_out(score, x)))
    # Position 0 is the CLS token the classifier reads: every measure ranks content tokens.
    mean_tau = lambda a, b: float(np.nanmean(  # noqa: E731
        [analysis.kendall_tau(a[i, 1:], b[i, 1:]) for i in range(len(a))]))
    evidence = [{int(test["polar"][i])} | ({int(test["negation"][i])}
                                            if test["negation"][i] >= 0 else set())
                for i in range(len(label))]
    top = lambda v: float(np.mean([int(np.argmax(v[i, 1:])) + 1 in evidence[i]  # noqa: E731
                                   for i in range(len(v))]))

    def apply_with(new_weights: dict):
        return probability_with(model, params, tokens, position, predicted, new_weights)

    uniform = uniform_weights(tokens, config.model.num_heads)
    rngs = train.SeedRngs(seed)
    layers = []
    for index, path in enumerate(paths):
        weights = jnp.asarray(maps[path])  # [N, H, T, S]
        cls_row = np.asarray(weights[:, :, 0, :].mean(axis=1))  # [N, S]
        keys = jax.random.split(jax.random.fold_in(rngs.key("permutation"), index),
                                config.permutations)
        changes = np.stack([np.abs(np.asarray(apply_with({path: permute_rows(k, weights)})[0])
                                   - np.asarray(probability)) for k in keys])
        last = index == len(paths) - 1
        best = adversarial_attention(
            model, params, (tokens, position, predicted, probability), path, weights, last,
            jax.random.fold_in(rngs.key("adversarial"), index), config)
        uniform_probability, uniform_predicted = apply_with({path: uniform})
        layers.append({
            "path": path,
            "tau_attention_vs_gradient": mean_tau(cls_row, gxi),
            "tau_attention_vs_leave_one_out": mean_tau(cls_row, loo),
            "top_token_is_evidence": top(cls_row),
            "permutation_median_change": float(np.median(np.median(changes, 0))),
            "permutation_fraction_above_0.5": float(np.mean(np.median(changes, 0) > 0.5)),
            "adversarial_median_jsd": float(np.median(best)),
            "adversarial_large_jsd_fraction": float(np.mean(best >= config.verdict.large_jsd)),
            "uniform_accuracy": float(np.mean(np.asarray(uniform_predicted) == label)),
            "uniform_median_change": float(np.median(np.abs(
                np.asarray(uniform_probability) - np.asarray(probability)))),
            "max_jsd_per_example": best.tolist(),
        })
    _, all_uniform = apply_with({p: uniform for p in paths})
    uniform_model = UniformAttention(model, tuple(paths), config.model.num_heads)
    uniform_trained = np.asarray(uniform_model.apply({"params": uniform_params}, tokens,
                                                     position)).argmax(-1)
    return {
        "seed": seed, "test_accuracy": float(np.mean(np.asarray(predicted) == label)),
        "uniform_trained_accuracy": float(np.mean(uniform_trained == label)),
        "uniform_all_layers_accuracy": float(np.mean(np.asarray(all_uniform) == label)),
        "tau_gradient_vs_leave_one_out": mean_tau(gxi, loo),
        "top_token_is_evidence": {"gradient": top(gxi), "leave_one_out": top(loo)},
        "layers": layers,
    }


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    task = SentimentTask(length=config.length, negation_rate=config.negation_rate,
                         distractor_rate=config.distractor_rate)
    seeds = list(config.seeds)
    data = seed_data(config, task, seeds)
    model = build(config, task)
    example = data[seeds[0]]["test"]
    _, maps = analysis.capture_attention(
        model, model.init(jax.random.key(0), example["tokens"][:2], example["position"][:2]),
        example["tokens"][:2], example["position"][:2])
    paths = analysis.layer_paths(maps, "self_attention")
    attention = train_arm("attention", model, config, data, run_dir)
    uniform = train_arm("uniform_attention",
                        UniformAttention(model, tuple(paths), config.model.num_heads),
                        config, data, run_dir)
    print(f"{attention.num_params} parameters per model; trained in {attention.seconds:.0f} s "
          f"(attention) and {uniform.seconds:.0f} s (frozen uniform attention)")
    per_seed = [measure_seed(config, model, p, u, data[s]["test"], s, paths)
                for s, p, u in zip(seeds, attention.params, uniform.params, strict=True)]
    return {"seeds": seeds, "paths": paths, "num_params": attention.num_params,
            "per_seed": per_seed}


# --------------------------------------------------------------------------- verdict


def per_seed_metrics(numbers: dict) -> dict[str, list[float]]:
    per = numbers["per_seed"]
    out = {
        "test_accuracy": [r["test_accuracy"] for r in per],
        "uniform_trained_accuracy": [r["uniform_trained_accuracy"] for r in per],
        "uniform_gap": [r["test_accuracy"] - r["uniform_trained_accuracy"] for r in per],
        "uniform_all_layers_accuracy": [r["uniform_all_layers_accuracy"] for r in per],
        "tau_gradient_vs_leave_one_out": [r["tau_gradient_vs_leave_one_out"] for r in per],
        "max_layer_tau_attention_vs_leave_one_out": [
            max(la["tau_attention_vs_leave_one_out"] for la in r["layers"]) for r in per],
        "min_layer_adversarial_large_jsd_fraction": [
            min(la["adversarial_large_jsd_fraction"] for la in r["layers"]) for r in per],
    }
    for index in range(len(per[0]["layers"])):
        for key in ("tau_attention_vs_leave_one_out", "tau_attention_vs_gradient",
                    "permutation_median_change", "adversarial_large_jsd_fraction",
                    "uniform_accuracy", "top_token_is_evidence"):
            out[f"layer{index}_{key}"] = [r["layers"][index][key] for r in per]
    return out


def verdict(numbers: dict, config) -> dict:
    v = config.verdict
    per = per_seed_metrics(numbers)
    disagree = [tau <= g - v.agree_margin for tau, g in zip(
        per["max_layer_tau_attention_vs_leave_one_out"], per["tau_gradient_vs_leave_one_out"],
        strict=True)]
    swappable = [f >= v.adversarial_fraction
                 for f in per["min_layer_adversarial_large_jsd_fraction"]]
    passes = [a and b for a, b in zip(disagree, swappable, strict=True)]
    needed = [gap >= v.uniform_gap for gap in per["uniform_gap"]]
    claim_cls, k_of_n = experiment.seed_verdict(passes, holds_at=v.holds_at, fails_at=v.fails_at)
    needed_cls, needed_k = experiment.seed_verdict(needed, holds_at=v.holds_at,
                                                   fails_at=v.fails_at)
    cls = claim_cls
    if claim_cls == "claim holds" and needed_cls != "claim holds":
        cls = "mixed"
    m = {name: stats.summary(x) for name, x in per.items()}
    f = stats.format_summary
    if cls == "claim holds":
        why = ("attention disagrees with leave-one-out importance and very different "
               "attention keeps the output, in every layer, and the task needs attention")
    elif cls == "mixed" and claim_cls == "claim holds":
        why = ("the counterfactual tests pass, but a model trained with uniform attention "
               "does as well, so they say little about attention")
    elif cls == "mixed":
        why = "the seeds disagree"
    elif not any(disagree):
        why = ("attention agrees with leave-one-out importance as well as gradient x input "
               "does (A fails)" + ("" if any(swappable) else
                                   ", and no very different attention keeps the output"))
    else:
        why = "no very different attention keeps the output in every layer (B fails)"
    reasons = (
        f"{why}; the per-seed test (A and B) holds in {k_of_n} (A in {sum(disagree)}, B in "
        f"{sum(swappable)}); attention is needed (uniform-trained model >= {v.uniform_gap:.0%} "
        f"worse) in {needed_k}; max over layers of tau(attention, LOO) "
        f"{f(m['max_layer_tau_attention_vs_leave_one_out'])} vs tau(gradient, LOO) "
        f"{f(m['tau_gradient_vs_leave_one_out'])}; min over layers of the fraction with an "
        f"adversarial JSD >= {v.large_jsd} "
        f"{f(m['min_layer_adversarial_large_jsd_fraction'], percent=True)}"
        " (95% bootstrap intervals over seeds)"
    )
    layer_text = "; ".join(
        f"layer {i}: tau(attn, LOO) {f(m[f'layer{i}_tau_attention_vs_leave_one_out'])}, "
        f"tau(attn, grad) {f(m[f'layer{i}_tau_attention_vs_gradient'])}, permutation moves "
        f"p by {f(m[f'layer{i}_permutation_median_change'])} (median), adversarial JSD >= "
        f"{v.large_jsd} for {f(m[f'layer{i}_adversarial_large_jsd_fraction'], percent=True)}, "
        f"uniform at test time: accuracy {f(m[f'layer{i}_uniform_accuracy'], percent=True)}"
        for i in range(len(numbers["paths"])))
    measured = (
        f"{config.model.num_layers}-layer toy sentiment classifier over "
        f"{len(numbers['seeds'])} seeds, test accuracy {f(m['test_accuracy'], percent=True)}; "
        f"trained with attention frozen to uniform {f(m['uniform_trained_accuracy'], percent=True)}"
        f"; every layer uniform at test time {f(m['uniform_all_layers_accuracy'], percent=True)}"
        f"; {layer_text}"
    )
    return {"verdict": f"{cls}: {reasons}", "measured": measured, "class": cls,
            "passes": passes, "attention_needed": needed, "metrics": m}


# Jain & Wallace 2019, the released outputs behind their Table 2 (successar/
# AttentionExplanation, graph_outputs/CorrStats_kendalltau/sst+lstm+tanh.csv at commit
# 752b779: "al" = attention vs gradient, "ag" = attention vs leave-one-out, "gl" = gradient
# vs leave-one-out; mean +- std over SST test sentences, BiLSTM encoder, tanh attention).
PUBLISHED = (
    ("tau_attention_vs_gradient", 0.351, "mean Kendall tau, attention vs gradient"),
    ("tau_attention_vs_leave_one_out", 0.291, "mean Kendall tau, attention vs leave-one-out"),
    ("tau_gradient_vs_leave_one_out", 0.656, "mean Kendall tau, gradient vs leave-one-out"),
)


def published(metrics: dict, numbers: dict) -> list[dict]:
    last = len(numbers["paths"]) - 1
    ours = {"tau_attention_vs_gradient": f"layer{last}_tau_attention_vs_gradient",
            "tau_attention_vs_leave_one_out": f"layer{last}_tau_attention_vs_leave_one_out",
            "tau_gradient_vs_leave_one_out": "tau_gradient_vs_leave_one_out"}
    return [{"source": "Jain & Wallace 2019 (NAACL), the SST BiLSTM+tanh row behind Table 2, "
                       "from the authors' released outputs (successar/AttentionExplanation, "
                       "graph_outputs/CorrStats_kendalltau/sst+lstm+tanh.csv)",
             "metric": what, "value": value, "ours": metrics[ours[key]]["mean"],
             "setting": "theirs: SST sentences, one additive attention layer over a BiLSTM, "
                        "taus over all tokens; ours: a 2-layer transformer's CLS row (mean "
                        "over heads, last layer) on 12-word toy sentences with one polarity "
                        "word, taus over the content tokens"}
            for key, value, what in PUBLISHED]


PUBLISHED_NOTE = (
    "Wiegreffe & Pinter 2019 (EMNLP, sec. 3.1, Table 2) compare each dataset's F1 with a model "
    "whose attention is frozen to uniform; the table's text could not be retrieved here "
    "(only the code, sarahwie/attention: run_frozen_attn.sh), so no number of theirs is "
    "quoted. Their setting: LSTM encoders on SST, IMDB, AgNews, 20News, MIMIC; ours: the "
    "toy task above, uniform attention in every transformer layer."
)


# --------------------------------------------------------------------------- plots


def plot(numbers: dict, config, run_dir) -> list[str]:
    per = numbers["per_seed"]
    layers = len(numbers["paths"])
    figure = Figure(figsize=(14, 3.8))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    x = np.arange(layers)
    for key, label, offset in (("tau_attention_vs_leave_one_out", "attn vs LOO", -0.15),
                               ("tau_attention_vs_gradient", "attn vs grad", 0.15)):
        values = np.array([[r["layers"][i][key] for i in range(layers)] for r in per])
        left.bar(x + offset, values.mean(0), width=0.3, label=label, alpha=0.6)
        for row in values:
            left.plot(x + offset, row, "k.")
    left.axhline(np.mean([r["tau_gradient_vs_leave_one_out"] for r in per]), color="k", ls=":",
                 label="grad vs LOO")
    left.set(xticks=x, xticklabels=[f"layer {i}" for i in x], ylabel="mean Kendall tau",
             title="do the rankings agree? (dots: seeds)")
    left.legend(fontsize=8)
    for i in range(layers):
        middle.hist(np.concatenate([r["layers"][i]["max_jsd_per_example"] for r in per]),
                    bins=30, alpha=0.5, label=f"layer {i}")
    middle.axvline(config.verdict.large_jsd, color="k", ls=":")
    middle.set(xlabel=f"max JSD with output within {config.adversarial.epsilon}",
               ylabel="sentences (all seeds)", title="adversarial attention")
    middle.legend(fontsize=8)
    names = [f"uniform L{i}" for i in range(layers)] + ["uniform all", "trained uniform",
                                                        "attention"]
    values = np.array([[r["layers"][i]["uniform_accuracy"] for i in range(layers)]
                       + [r["uniform_all_layers_accuracy"], r["uniform_trained_accuracy"],
                          r["test_accuracy"]] for r in per]) * 100
    right.bar(range(len(names)), values.mean(0), alpha=0.6)
    for row in values:
        right.plot(range(len(names)), row, "k.")
    right.set(xticks=range(len(names)), ylabel="test accuracy %",
              title="uniform attention (Wiegreffe & Pinter 2019)")
    right.set_xticklabels(names, rotation=20, fontsize=8)
    figure.tight_layout()
    path = run_dir.figure_path("explanation")
    figure.savefig(path, dpi=100)
    return [path.name]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    judged = verdict(numbers, config)
    figures = plot(numbers, config, run_dir)
    for record in numbers["per_seed"]:  # per-sentence lists stay in the figure only
        for layer in record["layers"]:
            layer.pop("max_jsd_per_example")
    return {
        "claim": CLAIM, "rule": rule_text(config), "verdict": judged["verdict"],
        "measured": judged["measured"], "seeds": numbers["seeds"],
        "metrics": judged["metrics"],
        "headline": ["max_layer_tau_attention_vs_leave_one_out",
                     "min_layer_adversarial_large_jsd_fraction", "uniform_gap"],
        "passes": judged["passes"], "attention_needed": judged["attention_needed"],
        "published": published(judged["metrics"], numbers), "published_note": PUBLISHED_NOTE,
        "numbers": numbers,
        "figures": figures,
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
