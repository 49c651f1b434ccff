"""Attention as terminal bars: ``trophy ████████░░ 0.71``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def attention_bars(
    tokens: Sequence[str],
    weights: np.ndarray,
    *,
    query: str | None = None,
    width: int = 10,
    top: int | None = None,
    highlight: Sequence[int] = (),
) -> str:
    """One line per key token: its name, a bar of ``width`` cells filled in proportion to its
    weight, and the weight.

    Args:
      tokens: S key tokens.
      weights: ``[S]`` attention weights of one query (e.g. the pronoun's row of one head).
      query: a header such as ``"it ->"``.
      top: only the ``top`` heaviest keys (in sentence order); default all.
      highlight: key indices marked with ``<`` (e.g. the candidates).
    """
    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(tokens),):
        raise ValueError(
            f"attention_bars: `weights` must be [S={len(tokens)}] to match the tokens, got "
            f"{list(weights.shape)}"
        )
    keep = range(len(tokens))
    if top is not None:
        keep = sorted(np.argsort(-weights, kind="stable")[:top])
    name_width = max(len(tokens[i]) for i in keep)
    lines = [query] if query else []
    for i in keep:
        filled = int(round(float(np.clip(weights[i], 0.0, 1.0)) * width))
        bar = "█" * filled + "░" * (width - filled)
        mark = "  <" if i in highlight else ""
        lines.append(f"  {tokens[i]:>{name_width}} {bar} {weights[i]:.2f}{mark}")
    return "\n".join(lines)
