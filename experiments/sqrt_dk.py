"""Why softmax(q k^T / sqrt(d_k)) divides by sqrt(d_k).

Vaswani et al. 2017, footnote 4: if the components of q and k are independent with mean 0
and variance 1, then q.k has variance d_k, which pushes the softmax "into regions where it
has extremely small gradients". The claim tested here is the common summary: *without the
1/sqrt(d_k) scale the softmax saturates and the gradient vanishes*.

For each head dim d_k, q, k, v ~ N(0, 1) are drawn and attention is computed through
``attnjax.ops.dot_product_attention`` twice on the same draws: scaled (``scale=None``, the
default 1/sqrt(d_k)) and unscaled (``scale=1``). Per draw it measures

  logit_variance      variance of the logits: q.k/sqrt(d_k) scaled, the raw q.k unscaled
  entropy             softmax entropy per query row, in nats (entropy_normalised: / log S)
  max_weight          the largest attention weight of a query row
  jacobian_norm       Frobenius norm of the softmax Jacobian dp/dlogits of a query row
  grad_norm           |dL/dq| for a random linear loss L = <R, attention(q, k, v)>, as the
                      RMS over query rows (the norm of the whole batch gradient per row)
  grad_norm_median    the median over query rows of the per-row |dL/dq|

row statistics are averaged over rows, then mean and spread are taken over seeds. The
verdict is read at the largest d_k with the thresholds of the config.
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

from attnjax import experiment
from attnjax.ops import dot_product_attention
from experiments import REGISTRY

NAME = "sqrt_dk"
CLAIM = REGISTRY[NAME].claim

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
    """Shapes of one measurement; hashable, so it is a static argument of `measure`."""

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
def measure(seed_rngs: jax.Array, problem: Problem) -> dict[str, dict[str, jax.Array]]:
    """Statistics of both arms on the same draws, one draw per key.

    Args:
      seed_rngs: ``[num_seeds]`` keys.
      problem: the shapes.

    Returns:
      ``{arm: {stat: [num_seeds]}}`` for arm in ``ARMS`` and stat in ``STATS``.
    """

    def one_seed(rng):
        inputs = sample_problem(rng, problem)
        return {arm: attention_statistics(*inputs, scale=scale) for arm, scale in ARMS.items()}

    return jax.vmap(one_seed)(seed_rngs)


def seed_rngs(config: ml_collections.ConfigDict, head_dim: int) -> jax.Array:
    """The ``[num_seeds]`` keys of one head dim.

    Folding in d_k (rather than splitting one key across the sweep) makes the draws of a
    head dim independent of which other head dims are swept.
    """
    head_dim_rng = jax.random.fold_in(jax.random.key(config.seed), head_dim)
    return jax.random.split(head_dim_rng, config.num_seeds)


def _check(holds: bool, value: float, threshold: float, held: str, failed: str) -> dict:
    return {
        "holds": bool(holds),
        "value": value,
        "threshold": threshold,
        "text": held if holds else failed,
    }


def evaluate_claim(
    head_dims: list[int], summary: dict, thresholds: ml_collections.ConfigDict
) -> tuple[dict[str, dict], str]:
    """Checks each part of the claim at the largest head dim.

    Args:
      head_dims: the sweep.
      summary: ``{arm: {stat: [per head dim]}}`` seed means.
      thresholds: ``saturated_max_weight`` and ``vanishing_grad_ratio``.

    Returns:
      ``(checks, verdict)``: per part ``{holds, value, threshold, text}``, and the verdict
      string: "claim holds" if every part holds, "claim does not hold" if none does,
      "mixed" otherwise, each followed by the reasons with their numbers.
    """
    i = int(np.argmax(head_dims))
    scaled = {stat: values[i] for stat, values in summary["scaled"].items()}
    unscaled = {stat: values[i] for stat, values in summary["unscaled"].items()}
    max_weight, t_sat = unscaled["max_weight"], thresholds.saturated_max_weight
    median_ratio = unscaled["grad_norm_median"] / scaled["grad_norm_median"]
    batch_ratio = unscaled["grad_norm"] / scaled["grad_norm"]
    t_grad = thresholds.vanishing_grad_ratio
    checks = {
        "softmax_saturates": _check(
            max_weight >= t_sat,
            max_weight,
            t_sat,
            f"the softmax saturates (mean max weight {max_weight:.2f} >= {t_sat})",
            f"the softmax does not saturate (mean max weight {max_weight:.2f} < {t_sat})",
        ),
        "median_query_gradient_vanishes": _check(
            median_ratio <= t_grad,
            median_ratio,
            t_grad,
            f"the median query's gradient vanishes ({median_ratio:.3g}x the scaled one, "
            f"<= {t_grad})",
            f"the median query's gradient does not vanish ({median_ratio:.3g}x the scaled "
            f"one, > {t_grad})",
        ),
        "batch_gradient_vanishes": _check(
            batch_ratio <= t_grad,
            batch_ratio,
            t_grad,
            f"the gradient over all queries vanishes ({batch_ratio:.3g}x the scaled one, "
            f"<= {t_grad})",
            f"the gradient over all queries does not vanish ({batch_ratio:.3g}x the scaled "
            f"one, > {t_grad})",
        ),
    }
    median_check, batch_check = (
        checks["median_query_gradient_vanishes"],
        checks["batch_gradient_vanishes"],
    )
    if median_check["holds"] and not batch_check["holds"]:
        # Then the batch gradient is carried by a few rows whose two top logits nearly
        # tie: there the softmax Jacobian is not small, and without the scale
        # dlogits/dq = k has norm ~sqrt(d_k) instead of ~1.
        spread = unscaled["grad_norm"] / unscaled["grad_norm_median"]
        batch_check["text"] += (
            ": it is carried by the few queries whose top logits nearly tie "
            f"(RMS over queries {spread:.0f}x the median)"
        )
    held = [c["text"] for c in checks.values() if c["holds"]]
    failed = [c["text"] for c in checks.values() if not c["holds"]]
    where = f"at d_k={head_dims[i]} without the scale"
    if not failed:
        return checks, f"claim holds: {where} {_join(held)}"
    if not held:
        return checks, f"claim does not hold: {where} {_join(failed)}"
    return checks, f"mixed: {where} {_join(held)}; but {_join(failed)}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def measured_sentence(head_dims: list[int], summary: dict) -> str:
    """One sentence with the key figures at the largest head dim, unscaled vs scaled."""
    i = int(np.argmax(head_dims))
    u = {stat: values[i] for stat, values in summary["unscaled"].items()}
    s = {stat: values[i] for stat, values in summary["scaled"].items()}
    return (
        f"At d_k={head_dims[i]}, without vs with the scale: logit variance "
        f"{u['logit_variance']:.4g} vs {s['logit_variance']:.3g}, entropy "
        f"{u['entropy_normalised']:.2f} vs {s['entropy_normalised']:.2f} of log S, max weight "
        f"{u['max_weight']:.2f} vs {s['max_weight']:.2f}, softmax Jacobian norm "
        f"{u['jacobian_norm']:.3f} vs {s['jacobian_norm']:.3f}, |dL/dq| "
        f"{u['grad_norm_median']:.3g} vs {s['grad_norm_median']:.3g} for the median query "
        f"and {u['grad_norm']:.3g} vs {s['grad_norm']:.3g} RMS over queries."
    )


def plot(head_dims: list[int], summary: dict, spread: dict, config, path) -> None:
    """2x2 panels against d_k (log axes): variance, saturation, Jacobian, gradient."""
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    colours = {"scaled": "tab:blue", "unscaled": "tab:red"}
    labels = {"scaled": r"scaled, $1/\sqrt{d_k}$", "unscaled": "unscaled"}

    def curve(ax, arm, stat, style="-o", label=None):
        ax.errorbar(
            head_dims,
            summary[arm][stat],
            yerr=spread[arm][stat],
            fmt=style,
            color=colours[arm],
            label=label or labels[arm],
            capsize=3,
            markersize=4,
        )

    ax = axes[0, 0]
    for arm in ARMS:
        curve(ax, arm, "logit_variance")
    ax.plot(head_dims, head_dims, ":", color="grey", label=r"$d_k$")
    ax.set(yscale="log", title="variance of the logits", ylabel=r"Var($q\cdot k\,\cdot$ scale)")

    ax = axes[0, 1]
    for arm in ARMS:
        curve(ax, arm, "entropy_normalised", "-o", f"{labels[arm]}: entropy / log S")
        curve(ax, arm, "max_weight", "--s", f"{labels[arm]}: max weight")
    ax.axhline(
        config.thresholds.saturated_max_weight,
        color="grey",
        lw=0.8,
        ls=":",
        label="saturation threshold (max weight)",
    )
    ax.set(ylim=(0, 1.05), title="softmax saturation (per query row)")

    ax = axes[1, 0]
    for arm in ARMS:
        curve(ax, arm, "jacobian_norm")
    ax.set(
        yscale="log", title="softmax Jacobian per row", ylabel=r"$\|\partial p / \partial z\|_F$"
    )

    ax = axes[1, 1]
    for arm in ARMS:
        curve(ax, arm, "grad_norm", "-o", f"{labels[arm]}: RMS over queries")
        curve(ax, arm, "grad_norm_median", "--s", f"{labels[arm]}: median query")
    ax.set(yscale="log", title=r"gradient $\|\partial L / \partial q\|$ per query row")

    for ax in axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xticks(head_dims, [str(d) for d in head_dims])
        ax.xaxis.set_minor_locator(NullLocator())  # only the swept d_k are ticked
        ax.set_xlabel(r"head dim $d_k$")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        rf"Why $1/\sqrt{{d_k}}$: q, k, v ~ N(0, 1), S={config.key_length} keys, "
        f"{config.num_seeds} seeds (bars: std over seeds)"
    )
    fig.savefig(path, dpi=120)


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """Sweeps d_k, logs one metrics line per d_k, plots, and returns the results."""
    head_dims = [int(d) for d in config.head_dims]
    summary = {arm: {stat: [] for stat in STATS} for arm in ARMS}
    spread = {arm: {stat: [] for stat in STATS} for arm in ARMS}
    for head_dim in head_dims:
        problem = Problem(
            batch_size=config.batch_size,
            num_heads=config.num_heads,
            query_length=config.query_length,
            key_length=config.key_length,
            head_dim=head_dim,
            value_dim=config.value_dim,
        )
        per_seed = jax.device_get(measure(seed_rngs(config, head_dim), problem))
        line = {"head_dim": head_dim}
        for arm in ARMS:
            for stat in STATS:
                values = np.asarray(per_seed[arm][stat], dtype=np.float64)
                summary[arm][stat].append(float(values.mean()))
                spread[arm][stat].append(float(values.std()))
                line[f"{arm}/{stat}"] = summary[arm][stat][-1]
                line[f"{arm}/{stat}_std"] = spread[arm][stat][-1]
        run_dir.log(line)

    checks, verdict = evaluate_claim(head_dims, summary, config.thresholds)
    figure = run_dir.figure_path(NAME)
    plot(head_dims, summary, spread, config, figure)
    return {
        "claim": CLAIM,
        "measured": measured_sentence(head_dims, summary),
        "verdict": verdict,
        "checks": checks,
        "head_dim": head_dims,
        "key_length": config.key_length,
        "num_seeds": config.num_seeds,
        "mean": summary,
        "std_over_seeds": spread,
        "figures": [figure.name],
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
