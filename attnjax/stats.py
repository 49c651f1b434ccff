"""Numbers a verdict can stand on: bootstrap intervals over seeds or items, and the
``results.json`` metric records (``{"per_seed": [...], "mean": x, "ci95": [lo, hi]}``).

A trained result is a distribution over seeds, a pretrained model's over evaluation items
(``../shared/docs/protocol.md``). Intervals are percentile bootstraps (Efron & Tibshirani
1993, ch. 13) with a fixed resampling seed, so the same numbers give the same interval.
With 2-5 seeds a percentile interval is narrow by construction (it never leaves the range
of the values): read it as "the spread we saw", and read "holds in k of n seeds" beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

NUM_RESAMPLES = 10_000


def _values(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {array.shape}")
    return array


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    confidence: float = 0.95,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) of ``values``.

    Args:
      values: ``[n]`` per-seed or per-item values; non-finite values raise.
      statistic: maps ``[num_resamples, n]`` resamples to ``[num_resamples]`` (vectorised);
        the default is the mean over the last axis.
      confidence: the interval's coverage, in (0, 1).
      seed: the resampling seed (fixed: the interval is a pure function of ``values``).

    Returns:
      ``(lo, hi)``; for one value, ``(value, value)``.
    """
    x = _values(values)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`values` must be finite, got {x.tolist()}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}")
    statistic = statistic or (lambda resamples: resamples.mean(axis=-1))
    if x.size == 1:
        value = float(statistic(x[None])[0])
        return value, value
    index = np.random.default_rng(seed).integers(0, x.size, size=(num_resamples, x.size))
    stats = np.asarray(statistic(x[index]), dtype=np.float64)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of ``mean(a - b)`` over shared items (Koehn 2004's test for MT).

    Returns:
      ``{"difference": mean(a - b), "ci95": [lo, hi], "p_not_greater": fraction of
      resamples with mean(a - b) <= 0}`` (a one-sided p-value for "a beats b").
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"`a` and `b` must pair up item by item, got {x.shape} and {y.shape}")
    d = x - y
    index = np.random.default_rng(seed).integers(0, d.size, size=(num_resamples, d.size))
    means = d[index].mean(axis=-1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return {"difference": float(d.mean()), "ci95": [float(lo), float(hi)],
            "p_not_greater": float(np.mean(means <= 0.0))}


def summary(per_seed: Sequence[float] | np.ndarray, **kwargs) -> dict:
    """``{"per_seed": [...], "mean": x, "ci95": [lo, hi]}``: one headline metric of a
    trained experiment (values over seeds), as ``results.json`` stores it."""
    x = _values(per_seed, "per_seed")
    lo, hi = bootstrap_ci(x, **kwargs)
    return {"per_seed": [float(v) for v in x], "mean": float(x.mean()), "ci95": [lo, hi]}


def item_summary(per_item: Sequence[float] | np.ndarray, **kwargs) -> dict:
    """``{"mean": x, "ci95": [lo, hi], "n": items}``: a pretrained-model metric, with the
    interval over its evaluation items (there are no seeds to vary)."""
    x = _values(per_item, "per_item")
    lo, hi = bootstrap_ci(x, **kwargs)
    return {"mean": float(x.mean()), "ci95": [lo, hi], "n": int(x.size)}


def ratio_summary(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> dict:
    """``sum(numerators) / sum(denominators)`` with a cluster bootstrap interval.

    For a metric counted over items that come in clusters (dependency arcs in sentences):
    ``numerators[i]`` and ``denominators[i]`` are cluster ``i``'s totals (correct arcs, arcs),
    and the bootstrap resamples whole clusters, so items of one sentence are not counted as
    independent. A difference of two paired metrics is ``ratio_summary(a - b, n)``.

    Returns:
      ``{"mean": ratio, "ci95": [lo, hi], "n": sum(denominators), "clusters": len}``.
    """
    num, den = _values(numerators, "numerators"), _values(denominators, "denominators")
    if num.shape != den.shape:
        raise ValueError(f"`numerators` and `denominators` must pair up cluster by cluster, "
                         f"got {num.shape} and {den.shape}")
    if not (np.all(np.isfinite(num)) and np.all(den >= 0) and den.sum() > 0):
        raise ValueError("`numerators` must be finite and `denominators` >= 0 with a "
                         "positive total")
    index = np.random.default_rng(seed).integers(0, num.size, size=(num_resamples, num.size))
    ratios = num[index].sum(-1) / np.maximum(den[index].sum(-1), 1e-12)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [alpha, 1.0 - alpha])
    return {"mean": float(num.sum() / den.sum()), "ci95": [float(lo), float(hi)],
            "n": int(round(den.sum())), "clusters": int(num.size)}


def format_summary(metric: dict, fmt: str = ".3f", percent: bool = False) -> str:
    """``"0.912 [0.900, 0.925]"`` (or ``"91.2% [90.0, 92.5]"``) of a ``summary`` record."""
    scale, unit = (100.0, "%") if percent else (1.0, "")
    lo, hi = metric["ci95"]
    f = ".1f" if percent else fmt
    return (f"{metric['mean'] * scale:{f}}{unit} "
            f"[{lo * scale:{f}}, {hi * scale:{f}}]")
