"""Why softmax(q k^T / sqrt(d_k)) divides by sqrt(d_k).

Vaswani et al. 2017, footnote 4: if the components of q and k are independent with mean 0
and variance 1, then q.k has variance d_k, which pushes the softmax "into regions where it
has extremely small gradients". The claim tested here is the common summary: *without the
1/sqrt(d_k) scale the softmax saturates and the gradient vanishes*. It is judged at the
head dims real models use (``judge_dims``: 64 and 128), in two parts.

Initialisation. For each seed and head dim d_k, q, k, v ~ N(0, 1) are drawn and attention
is computed through ``attnjax.ops.dot_product_attention`` twice on the same draws: scaled
(``scale=None``, the default 1/sqrt(d_k)) and unscaled (``scale=1``). Per draw:

  logit_variance      variance of the logits: q.k/sqrt(d_k) scaled, the raw q.k unscaled
  entropy             softmax entropy per query row, in nats (entropy_normalised: / log S)
  max_weight          the largest attention weight of a query row
  jacobian_norm       Frobenius norm of the softmax Jacobian dp/dlogits of a query row
  grad_norm           |dL/dq| for a random linear loss L = <R, attention(q, k, v)>, as the
                      RMS over query rows (the norm of the whole batch gradient per row)
  grad_norm_median    the median over query rows of the per-row |dL/dq|

Training. The same 2-layer attention-only LM (``attnjax.nn.attention_only``, head dim
d_k) is trained on repeated random sequences (``attnjax.data.induction``) with the scale
(``attention_scale=None``) and without it (``attention_scale=1.0``): same seeds (so the
same initialisation and data per seed), same learning-rate grid (each arm's rate chosen on
the training stream, whose batches are never repeated), seeds and rates vmapped in one
program per arm. Learning curves, steps to a loss threshold and the final loss on a fixed
test batch are compared per seed. AdamW normalises gradient magnitudes per parameter, so
a uniformly smaller gradient alone need not slow training: only the curves can say.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from attnjax import experiment, stats, train
from attnjax.data import induction
from attnjax.nn.attention_only import attention_only_lm
from attnjax.ops import dot_product_attention
from attnjax.parallel.check import next_token_loss_fn
from experiments import REGISTRY

NAME = "sqrt_dk"
CLAIM = REGISTRY[NAME].claim
RULE = (
    "Initialisation, at each d_k in {judge_dims} and per seed (one draw of q, k, v ~ N(0, 1)): "
    "the unscaled softmax saturates (mean max weight >= {saturated_max_weight}) and the "
    "unscaled |dL/dq| is <= {vanishing_grad_ratio}x the scaled one both for the median "
    "query and as RMS over queries. Training, at d_k in {train_dims} and per seed (same "
    "initialisation and data for both arms, each arm's learning rate chosen from the same "
    "grid {learning_rates} on the training stream): the unscaled model's final test loss "
    "exceeds the scaled one's by >= {train_loss_margin} nats. Each part holds if its test "
    "passes in >= {holds_at:.0%} of seeds, does not hold if in <= {fails_at:.0%}, mixed "
    "otherwise; the claim holds if every part holds, does not hold if none does, mixed "
    "otherwise."
)
HEADLINE = ["median_grad_ratio_dk64", "median_grad_ratio_dk128", "final_loss_gap_dk64"]

# The two arms, as the `scale` argument of dot_product_attention: None is 1/sqrt(d_k).
ARMS = {"scaled": None, "unscaled": 1.0}
STATS = (
    "logit_variance",
    "entropy",
    "entropy_normalised",
    "max_weight",
    "jacobian_norm",
    "grad_norm",
    "grad_norm_median",
)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Shapes of one measurement; hashable, so it is a static argument of `init_statistics`."""

    batch_size: int
    num_heads: int
    query_length: int
    key_length: int
    head_dim: int
    value_dim: int


def sample_problem(rng: jax.Array, problem: Problem) -> tuple[jax.Array, ...]:
    """Draws unit-variance Gaussian attention inputs.

    Returns:
      ``queries [B, T, H, D]``, ``keys [B, S, H, D]``, ``values [B, S, H, Dv]`` and the
      loss direction ``cotangent [B, T, H, Dv]``, all i.i.d. N(0, 1) entrywise.
    """
    p = problem
    shapes = (
        (p.batch_size, p.query_length, p.num_heads, p.head_dim),
        (p.batch_size, p.key_length, p.num_heads, p.head_dim),
        (p.batch_size, p.key_length, p.num_heads, p.value_dim),
        (p.batch_size, p.query_length, p.num_heads, p.value_dim),
    )
    sizes = [math.prod(shape) for shape in shapes]
    # One draw cut into four rather than four draws of split keys: the arrays are i.i.d.
    # either way, and each threefry call adds ~1 s of XLA compile time on a CPU.
    flat = jax.random.normal(rng, (sum(sizes),))
    chunks = jnp.split(flat, np.cumsum(sizes)[:-1])
    return tuple(chunk.reshape(shape) for chunk, shape in zip(chunks, shapes, strict=True))


def _sum_of_others(x: jax.Array) -> jax.Array:
    """``out[..., i] = sum_{j != i} x[..., j]`` for ``x >= 0``, without cancellation.

    ``sum(x) - x[i]`` loses every digit when ``x[i]`` holds nearly all the mass, which is
    exactly a saturated softmax row; exclusive prefix plus suffix sums only add.
    """
    # The prefix sum up to i - 1 and the suffix sum from i + 1, each without x[i].
    zeros = jnp.zeros_like(x[..., :1])
    before = jnp.concatenate([zeros, jnp.cumsum(x, axis=-1)[..., :-1]], axis=-1)
    after = jnp.concatenate([jnp.cumsum(x[..., ::-1], axis=-1)[..., -2::-1], zeros], axis=-1)
    return before + after


def softmax_jacobian_norm(attention_weights: jax.Array) -> jax.Array:
    """Frobenius norm of the softmax Jacobian of each row, from the softmax output.

    For p = softmax(z), dp/dz = diag(p) - p p^T, so
    |dp/dz|_F^2 = sum_i p_i^2 (1 - p_i)^2 + sum_{i != j} p_i^2 p_j^2, a sum of non-negative
    terms. With 1 - p_i and sum_{j != i} p_j^2 taken as sums over the other entries, it
    stays accurate for near one-hot rows, where the expanded
    sum p^2 - 2 sum p^3 + (sum p^2)^2 cancels to float32 noise. No S x S matrix is built.

    Args:
      attention_weights: ``[..., S]`` rows that sum to 1.

    Returns:
      ``[...]`` the norm per row: 0 for a one-hot row, largest for two equal weights.
    """
    p2 = attention_weights**2
    diagonal = p2 * _sum_of_others(attention_weights) ** 2
    off_diagonal = p2 * _sum_of_others(p2)
    return jnp.sqrt(jnp.sum(diagonal + off_diagonal, axis=-1))


def attention_statistics(
    queries: jax.Array,
    keys: jax.Array,
    values: jax.Array,
    cotangent: jax.Array,
    scale: float | None,
) -> dict[str, jax.Array]:
    """Saturation and gradient statistics of one attention call (scalars, see module doc).

    Args:
      queries: ``[B, T, H, D]``.
      keys: ``[B, S, H, D]``.
      values: ``[B, S, H, Dv]``.
      cotangent: ``[B, T, H, Dv]``, the direction R of the loss L = <R, out>.
      scale: the logit scale passed to ``dot_product_attention`` (None: 1/sqrt(D)).
    """
    head_dim, key_length = queries.shape[-1], keys.shape[-3]

    def loss(q):
        out, weights = dot_product_attention(q, keys, values, scale=scale, return_weights=True)
        return jnp.sum(out * cotangent), weights

    grad, weights = jax.grad(loss, has_aux=True)(queries)  # [B, T, H, D], [B, H, T, S]

    # The op does not return logits; they are only needed for their variance.
    logit_scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    logits = jnp.einsum("bthd,bshd->bhts", queries, keys) * logit_scale
    # entr(p) = -p log p with entr(0) = 0: saturated rows underflow to exact zeros.
    entropy = jnp.sum(jax.scipy.special.entr(weights), axis=-1)  # [B, H, T]
    row_grad_norm = jnp.linalg.norm(grad, axis=-1)  # [B, T, H]
    return {
        "logit_variance": jnp.var(logits),
        "entropy": jnp.mean(entropy),
        "entropy_normalised": jnp.mean(entropy) / math.log(key_length),
        "max_weight": jnp.mean(jnp.max(weights, axis=-1)),
        "jacobian_norm": jnp.mean(softmax_jacobian_norm(weights)),
        "grad_norm": jnp.sqrt(jnp.mean(row_grad_norm**2)),
        "grad_norm_median": jnp.median(row_grad_norm),
    }


@functools.partial(jax.jit, static_argnums=1)
def init_statistics(keys: jax.Array, problem: Problem) -> dict[str, dict[str, jax.Array]]:
    """Statistics of both arms on the same draws, one draw per key.

    Args:
      keys: ``[num_seeds]`` keys.
      problem: the shapes.

    Returns:
      ``{arm: {stat: [num_seeds]}}`` for arm in ``ARMS`` and stat in ``STATS``.
    """

    def one_seed(rng):
        inputs = sample_problem(rng, problem)
        return {arm: attention_statistics(*inputs, scale=scale) for arm, scale in ARMS.items()}

    return jax.vmap(one_seed)(keys)


def draw_keys(seeds, head_dim: int) -> jax.Array:
    """The ``[num_seeds]`` keys of one head dim: each seed's ``data_draw`` stream folded
    with d_k, so a head dim's draws do not depend on which others are swept."""
    return jnp.stack([jax.random.fold_in(train.SeedRngs(int(s)).key("data_draw"), head_dim)
                      for s in seeds])


def measure_initialisation(config, run_dir) -> dict:
    """``{str(d_k): {arm: {stat: [per seed]}}}``; one metrics line per d_k."""
    out = {}
    for head_dim in config.head_dims:
        problem = Problem(batch_size=config.batch_size, num_heads=config.num_heads,
                          query_length=config.query_length, key_length=config.key_length,
                          head_dim=int(head_dim), value_dim=config.value_dim)
        per_seed = jax.device_get(init_statistics(draw_keys(config.seeds, head_dim), problem))
        out[str(head_dim)] = {arm: {stat: [float(v) for v in np.asarray(per_seed[arm][stat])]
                                    for stat in STATS} for arm in ARMS}
        run_dir.log({"split": "initialisation", "head_dim": int(head_dim),
                     **{f"{arm}/{stat}": float(np.mean(values))
                        for arm, table in out[str(head_dim)].items()
                        for stat, values in table.items()}})
    return out


def steps_to(history: list[dict], threshold: float) -> int | None:
    """The first logged step whose training loss is <= ``threshold`` (None: never)."""
    return next((r["step"] for r in history if r["loss"] <= threshold), None)


def measure_training(config, run_dir, head_dim: int) -> dict:
    """Trains the scaled and the unscaled LM at ``head_dim`` over seeds x learning rates.

    Returns ``{arm: {"learning_rate", "final_loss" [per seed], "steps_to_threshold",
    "curve": {"step", "loss" [per seed]}, "num_params"}}``.
    """
    t = config.training
    n = t.half_length
    test = induction.repeated_sequences(np.random.default_rng([t.eval_seed, head_dim]),
                                        t.eval_batch_size, n, t.vocab_size, t.min_half_length)
    test_tokens = jnp.asarray(test["tokens"])
    block = ml_collections.ConfigDict({"model_dim": t.num_heads * head_dim,
                                       "num_heads": t.num_heads, "num_layers": t.num_layers,
                                       "position": t.position})
    out = {}
    for arm, scale in ARMS.items():
        model = attention_only_lm(block, vocab_size=t.vocab_size, max_len=2 * n + 1,
                                  attention_scale=scale)
        loss_fn = next_token_loss_fn(model)
        result = train.train(
            name=f"{arm}-dk{head_dim}", seeds=config.seeds, config=config.train,
            init=lambda key, model=model: model.init(key, test_tokens[:1, :-1])["params"],
            loss_fn=loss_fn,
            batches=lambda rngs, step: induction.batch_at(
                step, seed=rngs.int("data_draw"), batch_size=config.train.batch_size,
                half_length=n, vocab_size=t.vocab_size, min_half_length=t.min_half_length),
            run_dir=run_dir, parallel=config.parallel, vmap_seeds=config.vmap_seeds,
            learning_rates=list(t.learning_rates),
        )
        print(f"{NAME}: {arm} d_k={head_dim}: {result.num_params:,} parameters, "
              f"{len(result.members)} runs in {result.seconds:.0f} s (vmapped: {result.vmapped})")
        # Selection: the rate with the lowest mean final training loss over seeds (every
        # batch is fresh, so the training stream is held-out data); the test batch reports.
        by_rate = {lr: np.mean([result.final[i]["loss"] for i, m in enumerate(result.members)
                                if m.learning_rate == lr]) for lr in map(float, t.learning_rates)}
        rate = min(by_rate, key=by_rate.get)
        test_loss = jax.jit(lambda params, loss_fn=loss_fn: loss_fn(
            params, {"tokens": test_tokens}, None)[0])
        histories = [result.history(s, rate, split="train") for s in config.seeds]
        out[arm] = {
            "learning_rate": rate, "train_loss_by_rate": {f"{k:g}": float(v)
                                                          for k, v in by_rate.items()},
            "final_loss": [float(test_loss(result.member_params(s, rate)))
                           for s in config.seeds],
            "steps_to_threshold": [steps_to(h, t.loss_threshold) for h in histories],
            "curve": {"step": [r["step"] for r in histories[0]],
                      "loss": [[r["loss"] for r in h] for h in histories]},
            "num_params": result.num_params,
        }
    return out


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """The per-seed numbers of both parts (see the module doc)."""
    return {
        "seeds": [int(s) for s in config.seeds],
        "initialisation": measure_initialisation(config, run_dir),
        "training": {str(d): measure_training(config, run_dir, int(d))
                     for d in config.training.head_dims},
    }


def _ratios(table: dict, stat: str) -> list[float]:
    return [u / s for u, s in zip(table["unscaled"][stat], table["scaled"][stat], strict=True)]


def metrics(numbers: dict) -> dict:
    """Per-seed summaries: at every swept d_k the unscaled max weight and the gradient
    ratios (unscaled / scaled); per trained d_k the final test losses and their gap."""
    out = {}
    for d, table in numbers["initialisation"].items():
        out[f"unscaled_max_weight_dk{d}"] = stats.summary(table["unscaled"]["max_weight"])
        out[f"median_grad_ratio_dk{d}"] = stats.summary(_ratios(table, "grad_norm_median"))
        out[f"rms_grad_ratio_dk{d}"] = stats.summary(_ratios(table, "grad_norm"))
    for d, arms in numbers["training"].items():
        for arm in ARMS:
            out[f"final_loss_{arm}_dk{d}"] = stats.summary(arms[arm]["final_loss"])
        out[f"final_loss_gap_dk{d}"] = stats.summary(
            [u - s for u, s in zip(arms["unscaled"]["final_loss"], arms["scaled"]["final_loss"],
                                   strict=True)])
    return out


def _passes(numbers: dict, config) -> dict[str, list[bool]]:
    th = config.thresholds
    parts = {}
    for d in config.judge_dims:
        table = numbers["initialisation"][str(d)]
        parts[f"initialisation at d_k={d}"] = [
            w >= th.saturated_max_weight and m <= th.vanishing_grad_ratio
            and r <= th.vanishing_grad_ratio
            for w, m, r in zip(table["unscaled"]["max_weight"], _ratios(table, "grad_norm_median"),
                               _ratios(table, "grad_norm"), strict=True)]
    for d, arms in numbers["training"].items():
        parts[f"training at d_k={d}"] = [
            u - s >= th.train_loss_margin for u, s in
            zip(arms["unscaled"]["final_loss"], arms["scaled"]["final_loss"], strict=True)]
    return parts


def verdict(numbers: dict, config: ml_collections.ConfigDict) -> dict:
    """``{"verdict", "measured"}``: a pure function of the numbers and the thresholds."""
    m = metrics(numbers)
    fmt = stats.format_summary
    classes, texts = {}, []
    for part, passes in _passes(numbers, config).items():
        cls, k_of_n = experiment.seed_verdict(passes, holds_at=config.verdict.holds_at,
                                              fails_at=config.verdict.fails_at)
        classes[part] = cls
        d = part.rpartition("=")[2]
        if part.startswith("initialisation"):
            detail = (f"unscaled max weight {fmt(m[f'unscaled_max_weight_dk{d}'], '.2f')}, "
                      f"|dL/dq| unscaled/scaled {fmt(m[f'median_grad_ratio_dk{d}'], '.2f')} "
                      f"for the median query and {fmt(m[f'rms_grad_ratio_dk{d}'], '.2f')} RMS")
        else:
            detail = (f"final test loss unscaled minus scaled "
                      f"{fmt(m[f'final_loss_gap_dk{d}'], '.3f')} nats")
        texts.append(f"{part}: {cls.removeprefix('claim ')} (holds in {k_of_n}: {detail})")
    overall = experiment.combine_verdicts(classes)
    measured = []
    for d in config.judge_dims:
        measured.append(
            f"at d_k={d} (initialisation) the unscaled softmax's mean max weight is "
            f"{fmt(m[f'unscaled_max_weight_dk{d}'], '.2f')} and its |dL/dq| is "
            f"{fmt(m[f'median_grad_ratio_dk{d}'], '.2f')}x the scaled one for the median query")
    for d, arms in numbers["training"].items():
        reached = {arm: [s for s in arms[arm]["steps_to_threshold"] if s is not None]
                   for arm in ARMS}
        steps = {arm: (f"{np.median(v):.0f}" if v else "never") +
                 f" ({len(v)} of {len(numbers['seeds'])} seeds)" for arm, v in reached.items()}
        measured.append(
            f"trained at d_k={d}, final test loss {fmt(m[f'final_loss_scaled_dk{d}'], '.3f')} "
            f"scaled vs {fmt(m[f'final_loss_unscaled_dk{d}'], '.3f')} unscaled (lr "
            f"{arms['scaled']['learning_rate']:g} / {arms['unscaled']['learning_rate']:g}), "
            f"median steps to loss <= {config.training.loss_threshold} {steps['scaled']} vs "
            f"{steps['unscaled']}")
    big = str(max(int(d) for d in numbers["initialisation"]))
    measured.append(f"at d_k={big} the median-query ratio is "
                    f"{fmt(m[f'median_grad_ratio_dk{big}'], '.3g')}")
    return {"verdict": f"{overall}: " + "; ".join(texts),
            "measured": "Per seed, mean [95% CI]: " + "; ".join(measured) + "."}


def plot_initialisation(numbers: dict, config, path) -> None:
    """2x2 panels against d_k (log axes): variance, saturation, Jacobian, gradient; bars
    are the spread over seeds, dotted verticals the judged head dims."""
    head_dims = [int(d) for d in numbers["initialisation"]]
    table = numbers["initialisation"]
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    colours = {"scaled": "tab:blue", "unscaled": "tab:red"}
    labels = {"scaled": r"scaled, $1/\sqrt{d_k}$", "unscaled": "unscaled"}

    def curve(ax, arm, stat, style="-o", label=None):
        values = np.array([table[str(d)][arm][stat] for d in head_dims])  # [dims, seeds]
        ax.errorbar(head_dims, values.mean(axis=1), yerr=values.std(axis=1), fmt=style,
                    color=colours[arm], label=label or labels[arm], capsize=3, markersize=4)

    ax = axes[0, 0]
    for arm in ARMS:
        curve(ax, arm, "logit_variance")
    ax.plot(head_dims, head_dims, ":", color="grey", label=r"$d_k$")
    ax.set(yscale="log", title="variance of the logits", ylabel=r"Var($q\cdot k\,\cdot$ scale)")
    ax = axes[0, 1]
    for arm in ARMS:
        curve(ax, arm, "entropy_normalised", "-o", f"{labels[arm]}: entropy / log S")
        curve(ax, arm, "max_weight", "--s", f"{labels[arm]}: max weight")
    ax.axhline(config.thresholds.saturated_max_weight, color="grey", lw=0.8, ls=":",
               label="saturation threshold (max weight)")
    ax.set(ylim=(0, 1.05), title="softmax saturation (per query row)")
    ax = axes[1, 0]
    for arm in ARMS:
        curve(ax, arm, "jacobian_norm")
    ax.set(yscale="log", title="softmax Jacobian per row",
           ylabel=r"$\|\partial p / \partial z\|_F$")
    ax = axes[1, 1]
    for arm in ARMS:
        curve(ax, arm, "grad_norm", "-o", f"{labels[arm]}: RMS over queries")
        curve(ax, arm, "grad_norm_median", "--s", f"{labels[arm]}: median query")
    ax.set(yscale="log", title=r"gradient $\|\partial L / \partial q\|$ per query row")
    for ax in axes.flat:
        for d in config.judge_dims:
            ax.axvline(d, color="k", lw=0.6, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(head_dims, [str(d) for d in head_dims])
        ax.xaxis.set_minor_locator(NullLocator())  # only the swept d_k are ticked
        ax.set_xlabel(r"head dim $d_k$")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(rf"Why $1/\sqrt{{d_k}}$: q, k, v ~ N(0, 1), S={config.key_length} keys, "
                 f"{len(numbers['seeds'])} seeds (bars: std over seeds; dotted: judged d_k)")
    fig.savefig(path, dpi=120)


def plot_training(numbers: dict, config, path) -> None:
    """Training loss against step per seed, scaled vs unscaled, one panel per d_k."""
    dims = list(numbers["training"])
    fig = Figure(figsize=(5.5 * len(dims), 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(dims)))
    for ax, d in zip(axes, dims, strict=True):
        for arm, colour in (("scaled", "tab:blue"), ("unscaled", "tab:red")):
            curve = numbers["training"][d][arm]
            for i, loss in enumerate(curve["curve"]["loss"]):
                ax.plot(curve["curve"]["step"], loss, color=colour, alpha=0.7,
                        label=f"{arm} (lr {curve['learning_rate']:g})" if i == 0 else None)
        ax.axhline(config.training.loss_threshold, color="grey", lw=0.8, ls=":",
                   label="loss threshold")
        ax.set(xlabel="training step", ylabel="training loss (nats, fresh batches)",
               title=f"2-layer attention-only LM, d_k={d}")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """Measures both parts, judges them, plots, and returns the results."""
    numbers = measure(config, run_dir)
    init_figure, train_figure = run_dir.figure_path(NAME), run_dir.figure_path(f"{NAME}_training")
    plot_initialisation(numbers, config, init_figure)
    plot_training(numbers, config, train_figure)
    th = config.thresholds
    return {
        "claim": CLAIM,
        "rule": RULE.format(judge_dims=tuple(config.judge_dims),
                            train_dims=tuple(config.training.head_dims),
                            learning_rates=tuple(config.training.learning_rates),
                            holds_at=config.verdict.holds_at, fails_at=config.verdict.fails_at,
                            **th.to_dict()),
        **verdict(numbers, config),
        "seeds": numbers["seeds"],
        "metrics": metrics(numbers),
        "headline": [h for h in HEADLINE if h in metrics(numbers)],
        "published": [],
        "published_note": "Vaswani et al. 2017 argue the scale from the variance of q.k "
                          "(footnote 4) and report no measurement of it to compare with.",
        "passes": _passes(numbers, config),
        "numbers": numbers,
        "figures": [init_figure.name, train_figure.name],
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
