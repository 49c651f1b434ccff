"""Is high attention weight high importance? (Jain & Wallace 2019, "Attention is not
Explanation")

A small transformer classifier (``nn.PositionClassifier`` reading the CLS position of an
``nn.Encoder``) learns the toy sentiment task of ``attnjax.data.sentiment``: one polarity
word among fillers, flipped by a "not" before it. On held-out sentences, for the CLS row of
the last layer's attention (mean over heads):

* agreement with importance measured without attention: Kendall tau between the attention
  weights and |gradient x input| and |leave-one-out| (``analysis.gradient_x_input``,
  ``analysis.leave_one_out`` on the margin of the predicted class), next to the tau between
  the two importance measures themselves; and how often the most attended token is the gold
  evidence (the polarity word or its "not");
* random permutation: shuffle each head's CLS-row weights over the positions
  (``analysis.with_attention_weights``) and measure the change in the predicted probability;
* adversarial attention: search (Adam on the weights' logits) for a CLS-row distribution as
  far as possible from the original (Jensen-Shannon divergence, nats, max ln 2) that keeps
  the predicted probability within ``epsilon``.

    python -m experiments.explanation [--config configs/explanation.py[:smoke]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, nn, train
from attnjax.data.sentiment import SentimentTask
from experiments import REGISTRY

NAME = "explanation"
CLAIM = REGISTRY[NAME].claim


def build(config, task: SentimentTask) -> nn.PositionClassifier:
    m = config.model
    cfg = nn.TransformerConfig(
        vocab_size=task.vocab_size, model_dim=m.model_dim, num_heads=m.num_heads,
        num_layers=m.num_layers, mlp_dim=2 * m.model_dim, max_len=task.length + 1,
        dropout_rate=0.0, position="learned", pre_ln=True,
    )
    return nn.PositionClassifier(nn.Encoder(cfg), num_classes=2)


def jsd(p: jax.Array, q: jax.Array) -> jax.Array:
    """Jensen-Shannon divergence (nats) over the last axis."""
    m = 0.5 * (p + q)
    kl = lambda a, b: jnp.sum(jnp.where(a > 0, a * (jnp.log(a + 1e-12) - jnp.log(b + 1e-12)),  # noqa: E731
                                        0.0), axis=-1)
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    task = SentimentTask(length=config.length, negation_rate=config.negation_rate)
    rng = np.random.default_rng(config.seed)
    train_set, test = task.sample(rng, config.num_train), task.sample(rng, config.num_test)
    model = build(config, task)
    params, fit_info = train.fit_classifier(
        model, {k: train_set[k] for k in ("tokens", "label", "position")},
        position_key="position", num_steps=config.train.num_steps,
        batch_size=config.train.batch_size, learning_rate=config.train.learning_rate,
        seed=config.seed, log=run_dir.log, checkpoint_dir=run_dir.path / "checkpoints",
        description=NAME)
    variables = {"params": params}
    tokens, position = jnp.asarray(test["tokens"]), jnp.asarray(test["position"])
    logits, maps = analysis.capture_attention(model, variables, tokens, position)
    predicted = jnp.argmax(logits, -1)
    accuracy = float(jnp.mean(predicted == test["label"]))
    path = analysis.layer_paths(maps, "self_attention")[-1]
    weights = maps[path]  # [N, H, T, T]
    cls_row = np.asarray(weights[:, :, 0, :].mean(axis=1))  # [N, T]

    def margin(out):  # predicted-class margin: what the evidence should explain
        sign = jnp.where(predicted == 1, 1.0, -1.0)
        return sign * (out[:, 1] - out[:, 0])

    x, score = analysis.embedding_function(model, variables, tokens, position, output=margin)
    gxi = np.abs(np.asarray(analysis.gradient_x_input(score, x)))
    loo = np.abs(np.asarray(analysis.leave_one_out(score, x)))
    # Position 0 is the CLS token the classifier reads: every measure ranks content tokens.
    tau = {name: np.array([analysis.kendall_tau(a[i, 1:], b[i, 1:]) for i in range(len(a))])
           for name, (a, b) in {"attention_vs_gradient": (cls_row, gxi),
                                "attention_vs_leave_one_out": (cls_row, loo),
                                "gradient_vs_leave_one_out": (gxi, loo)}.items()}
    evidence = [{int(test["polar"][i])} | ({int(test["negation"][i])}
                                            if test["negation"][i] >= 0 else set())
                for i in range(len(cls_row))]
    top = {name: float(np.mean([int(np.argmax(v[i, 1:])) + 1 in evidence[i]
                                for i in range(len(v))]))
           for name, v in {"attention": cls_row, "gradient": gxi, "leave_one_out": loo}.items()}

    probability = jax.nn.softmax(logits, -1)[jnp.arange(len(predicted)), predicted]

    def predicted_probability(new_weights):
        out = analysis.with_attention_weights(model, variables, tokens, position,
                                              weights={path: new_weights})
        return jax.nn.softmax(out, -1)[jnp.arange(len(predicted)), predicted]

    changes = []
    keys = jax.random.split(jax.random.key(config.seed), config.permutations)
    permute = jax.jit(lambda key: _permuted_cls_row(key, weights))
    apply = jax.jit(predicted_probability)
    for key in keys:
        changes.append(np.abs(np.asarray(apply(permute(key)) - probability)))
    changes = np.stack(changes)  # [permutations, N]
    adversarial = adversarial_attention(predicted_probability, weights, probability, config)
    results = {
        "test_accuracy": accuracy, "train": fit_info, "layer": path,
        "kendall_tau": {k: {"mean": float(np.nanmean(v)), "median": float(np.nanmedian(v))}
                        for k, v in tau.items()},
        "top_token_is_evidence": top,
        "permutation": {"median_abs_change": float(np.median(changes)),
                        "mean_abs_change": float(np.mean(changes)),
                        "fraction_below_0.05": float(np.mean(np.median(changes, 0) < 0.05)),
                        "fraction_above_0.5": float(np.mean(np.median(changes, 0) > 0.5))},
        "adversarial": adversarial,
        "figures": [plot(tau, changes, adversarial, run_dir)],
    }
    results.update(verdict_of(results, config))
    return results


def _permuted_cls_row(key, weights):
    """``weights [N, H, T, S]`` with each head's CLS row (query 0) randomly permuted."""
    n, h, _, s = weights.shape
    order = jax.vmap(lambda k: jax.random.permutation(k, s))(jax.random.split(key, n * h))
    row = jnp.take_along_axis(weights[:, :, 0, :].reshape(n * h, s), order, axis=1)
    return weights.at[:, :, 0, :].set(row.reshape(n, h, s))


def adversarial_attention(predicted_probability, weights, probability, config) -> dict:
    """Per example: the CLS-row attention (every head of the last layer) farthest from the
    original in JSD whose predicted probability stays within ``epsilon``."""
    original = weights[:, :, 0, :]  # [N, H, S]
    logits0 = jnp.log(original + 1e-6)
    key = jax.random.key(config.seed + 1)
    z0 = logits0 + config.adversarial.init_noise * jax.random.normal(key, logits0.shape)
    eps = config.adversarial.epsilon

    def objective(z):
        new = jax.nn.softmax(z, -1)
        divergence = jsd(new, original).mean(-1)  # [N], mean over heads
        drift = jnp.abs(predicted_probability(weights.at[:, :, 0, :].set(new)) - probability)
        penalty = config.adversarial.penalty * jnp.maximum(drift - eps, 0.0)
        return jnp.sum(-divergence + penalty), (divergence, drift)

    optimizer = optax.adam(config.adversarial.learning_rate)

    @jax.jit
    def step(z, state):
        (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(z)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(z, updates), state, aux

    z, state = z0, optimizer.init(z0)
    best = np.zeros(original.shape[0])
    for _ in range(config.adversarial.steps):
        z, state, (divergence, drift) = step(z, state)
        ok = np.asarray(drift) <= eps
        best = np.where(ok, np.maximum(best, np.asarray(divergence)), best)
    threshold = config.adversarial.large_jsd
    return {"epsilon": eps, "mean_max_jsd": float(best.mean()),
            "median_max_jsd": float(np.median(best)),
            "fraction_with_large_jsd": float(np.mean(best >= threshold)),
            "large_jsd": threshold, "max_jsd_per_example": best.tolist()}


def verdict_of(results: dict, config) -> dict:
    tau = results["kendall_tau"]
    top = results["top_token_is_evidence"]
    adv = results["adversarial"]
    perm = results["permutation"]
    measured = (
        f"1-layer... toy sentiment classifier, test accuracy {results['test_accuracy']:.1%}; "
        f"Kendall tau (mean over {config.num_test} sentences, CLS row of the last layer): "
        f"attention vs |grad x input| {tau['attention_vs_gradient']['mean']:.2f}, attention vs "
        f"|leave-one-out| {tau['attention_vs_leave_one_out']['mean']:.2f}, gradient vs "
        f"leave-one-out {tau['gradient_vs_leave_one_out']['mean']:.2f}; top token is the gold "
        f"evidence: attention {top['attention']:.0%}, gradient {top['gradient']:.0%}, "
        f"leave-one-out {top['leave_one_out']:.0%}; random permutation of the attention "
        f"changes the predicted probability by {perm['median_abs_change']:.3f} (median; by "
        f"> 0.5 for {perm['fraction_above_0.5']:.0%} of sentences); "
        f"adversarial attention within {adv['epsilon']} of the output reaches JSD "
        f"{adv['median_max_jsd']:.2f} nats (median; max ln 2 = 0.69), >= {adv['large_jsd']} "
        f"for {adv['fraction_with_large_jsd']:.0%} of sentences"
    ).replace("1-layer... ", f"{config.model.num_layers}-layer ")
    # The claim is about importance: does the output depend on where attention goes? Two
    # counterfactuals answer it (the rank agreement and top tokens are reported alongside).
    insensitive = perm["median_abs_change"] < config.insensitive_change
    swappable = adv["fraction_with_large_jsd"] >= 0.5
    finds = (f"; yet the most attended token is the gold evidence in {top['attention']:.0%} "
             f"of sentences (leave-one-out: {top['leave_one_out']:.0%})")
    if insensitive and swappable:
        verdict = ("claim holds: shuffling the attention barely moves the output and a very "
                   "different attention gives the same output, so a high weight does not "
                   "make a token important" + finds)
    elif insensitive or swappable or adv["fraction_with_large_jsd"] >= 0.2:
        verdict = ("mixed: " + ("shuffled attention leaves the output unchanged"
                                if insensitive else "shuffled attention changes the output")
                   + f", and a very different attention with the same output exists for "
                   f"{adv['fraction_with_large_jsd']:.0%} of sentences" + finds)
    else:
        verdict = ("claim does not hold here: the output depends on where attention goes and "
                   "no very different attention reproduces it" + finds)
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


def plot(tau: dict, changes: np.ndarray, adversarial: dict, run_dir) -> str:
    figure = Figure(figsize=(13, 3.8))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    left.boxplot([v[~np.isnan(v)] for v in tau.values()], tick_labels=[
        "attn vs grad", "attn vs LOO", "grad vs LOO"])
    left.set(ylabel="Kendall tau per sentence", title="do the rankings agree?")
    middle.hist(np.median(changes, 0), bins=30)
    middle.set(xlabel="|change in predicted probability| (median over permutations)",
               ylabel="sentences", title="randomly permuted attention")
    right.hist(adversarial["max_jsd_per_example"], bins=30)
    right.axvline(adversarial["large_jsd"], color="k", ls=":")
    right.set(xlabel=f"max JSD with output within {adversarial['epsilon']}",
              ylabel="sentences", title="adversarial attention")
    figure.tight_layout()
    path = run_dir.figure_path("explanation")
    figure.savefig(path, dpi=100)
    return path.name


if __name__ == "__main__":
    experiment.main(NAME, run)
