"""Attention heatmaps as matplotlib figures. They take plain arrays and token strings, so
they work for any model (weights from ``mutable=['intermediates']`` or anywhere else)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, never windows: experiments run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_attention(
    weights: np.ndarray,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str],
    *,
    ax=None,
    title: str | None = None,
    gold: np.ndarray | None = None,
):
    """Draw one ``[T, S]`` attention map: rows are queries, columns keys.

    Args:
      weights: ``[T, S]`` attention weights (rows typically sum to 1).
      query_tokens: T labels for the rows; key_tokens: S labels for the columns.
      gold: optional ``[T, S]`` bool; gold links are outlined with a box.
    """
    weights = np.asarray(weights, np.float32)
    if weights.shape != (len(query_tokens), len(key_tokens)):
        raise ValueError(
            f"plot_attention: `weights` must be [T={len(query_tokens)}, S={len(key_tokens)}] "
            f"to match the tokens, got {list(weights.shape)}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * len(key_tokens) + 1.5, 0.45 * len(query_tokens) + 1))
    ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(key_tokens)), key_tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(query_tokens)), query_tokens, fontsize=8)
    if gold is not None:
        for t, s in zip(*np.nonzero(gold), strict=True):
            ax.add_patch(plt.Rectangle((s - 0.5, t - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def save_attention_grid(
    path: str | Path,
    maps: Sequence[tuple[np.ndarray, Sequence[str], Sequence[str]]],
    *,
    titles: Sequence[str] | None = None,
    golds: Sequence[np.ndarray | None] | None = None,
    columns: int = 3,
    suptitle: str | None = None,
) -> Path:
    """Save several ``(weights [T, S], query_tokens, key_tokens)`` maps in one PNG."""
    rows = -(-len(maps) // columns)
    cols = min(columns, len(maps))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(maps):
            ax.axis("off")
            continue
        weights, query_tokens, key_tokens = maps[i]
        plot_attention(
            weights, query_tokens, key_tokens, ax=ax,
            title=titles[i] if titles else None, gold=golds[i] if golds else None,
        )
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_head_grid(
    path: str | Path,
    weights: np.ndarray,
    query_tokens: Sequence[str],
    key_tokens: Sequence[str] | None = None,
    *,
    suptitle: str | None = None,
) -> Path:
    """Save every head of every layer, ``weights [L, H, T, S]``, as one PNG: a row per
    layer, a column per head."""
    weights = np.asarray(weights, np.float32)
    key_tokens = query_tokens if key_tokens is None else key_tokens
    if weights.ndim != 4 or weights.shape[2:] != (len(query_tokens), len(key_tokens)):
        raise ValueError(
            f"save_head_grid: `weights` must be [L, H, T={len(query_tokens)}, "
            f"S={len(key_tokens)}], got {list(weights.shape)}"
        )
    layers, heads = weights.shape[:2]
    pairs = [(layer, head) for layer in range(layers) for head in range(heads)]
    maps = [(weights[layer, head], query_tokens, key_tokens) for layer, head in pairs]
    titles = [f"layer {layer} head {head}" for layer, head in pairs]
    return save_attention_grid(path, maps, titles=titles, columns=heads, suptitle=suptitle)
