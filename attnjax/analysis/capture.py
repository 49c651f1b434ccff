"""Capture attention weights from any attnjax model without editing it.

Attention modules sow their weights into the ``'intermediates'`` collection when asked to;
this asks (``attnjax.nn.sow_attention_weights()``, read while the model is traced, so it works
inside ``jax.jit`` too), runs the model with that collection mutable and returns the weights
keyed by module path. Outside it, a model runs its own kernel and forms no ``[T, S]`` weights.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from attnjax.nn.attention import sow_attention_weights


def capture_attention(
    model: nn.Module, variables: Any, *args, method=None, **kwargs
) -> tuple[Any, dict[str, np.ndarray]]:
    """Run ``model.apply(variables, *args, **kwargs)`` with every attention module sowing its
    weights (``nn.sow_attention_weights``) and collect the maps.

    Returns:
      ``(output, maps)`` where ``maps`` maps a module path such as
      ``"decoder/layer_0/cross_attention"`` to its ``[B, H, T, S]`` weights (jax arrays, so
      this works under ``jit``).
    """
    with sow_attention_weights():
        output, state = model.apply(
            variables, *args, method=method, mutable=["intermediates"], **kwargs
        )
    maps: dict[str, Any] = {}
    flat = jax.tree_util.tree_flatten_with_path(state.get("intermediates", {}))[0]
    for path, leaf in flat:
        names = [str(getattr(p, "key", getattr(p, "idx", p))) for p in path]
        if "attention_weights" not in names:
            continue
        module_path = "/".join(names[: names.index("attention_weights")])
        maps[module_path] = leaf
    return output, maps


def layer_paths(maps: dict[str, Any], kind: str) -> list[str]:
    """The paths of ``maps`` that contain ``kind`` (e.g. ``"self_attention"``), in layer
    order (``layer_10`` after ``layer_9``)."""
    natural = lambda path: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]
    paths = sorted((p for p in maps if kind in p.split("/")), key=natural)
    if not paths:
        raise ValueError(f"no attention map with {kind!r} in {sorted(maps)}")
    return paths


def stack_layers(maps: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Stack the maps whose path contains ``kind`` (e.g. ``"cross_attention"``) in layer
    order: ``[L, B, H, T, S]``."""
    return np.stack([np.asarray(maps[p]) for p in layer_paths(maps, kind)])
