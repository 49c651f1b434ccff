"""Probes of where attention goes, and how far back gradients reach.

* ``antecedent_probe``: for every layer and head, how often the pronoun's attention puts more
  weight on the gold antecedent than on the other candidate.
* ``input_gradient_norms``: ``|d output / d x_p|`` for every input position ``p``, the direct
  measure of how much an early token can still move the output (the "fading memory" of
  recurrence), through the models' ``'perturbations'`` hook.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnjax.analysis.capture import capture_attention, layer_paths
from attnjax.train.classify import map_in_batches


def antecedent_probe(
    weights: np.ndarray, pronoun: np.ndarray, candidates: np.ndarray, label: np.ndarray
) -> np.ndarray:
    """Probe accuracy of every head.

    Args:
      weights: ``[L, N, H, T, S]`` self-attention weights (``analysis.stack_layers``).
      pronoun: ``[N]`` query position of the pronoun.
      candidates: ``[N, 2]`` key positions of the two candidates.
      label: ``[N]`` which candidate is the antecedent.

    Returns:
      ``[L, H]``: the fraction of examples where the head's attention from the pronoun to the
      gold candidate exceeds that to the other (ties count as half).
    """
    weights = np.asarray(weights)
    if weights.ndim != 5:
        raise ValueError(
            f"antecedent_probe: `weights` must be [L, N, H, T, S], got {list(weights.shape)}"
        )
    n = weights.shape[1]
    if pronoun.shape != (n,) or candidates.shape != (n, 2) or label.shape != (n,):
        raise ValueError(
            f"antecedent_probe: expected pronoun [{n}], candidates [{n}, 2], label [{n}], got "
            f"{list(pronoun.shape)}, {list(candidates.shape)}, {list(label.shape)}"
        )
    rows = np.arange(n)
    from_pronoun = weights[:, rows, :, pronoun, :]  # [N, L, H, S]: advanced indices go first
    gold = from_pronoun[rows, :, :, candidates[rows, label]]
    other = from_pronoun[rows, :, :, candidates[rows, 1 - label]]
    score = (gold > other) + 0.5 * (gold == other)
    return score.mean(axis=0)


def input_gradient_norms(
    model: nn.Module, variables: Any, tokens: jax.Array, position: jax.Array, label: jax.Array,
    *extra: jax.Array,
) -> jax.Array:
    """``[N, L]`` norms of the gradient of the cross-entropy of ``label`` w.r.t. the input
    embedding at every position (zero where the model has no path from that position).

    ``model(tokens, position, *extra)`` must pass its embeddings through
    ``self.perturb("embeddings", ...)`` (``attnjax.nn.Encoder`` and ``RNNEncoder`` do);
    ``variables`` needs only ``params``.
    """
    params = variables["params"]
    # The perturbation tree for these inputs' shapes: where the hook sits, and its shape.
    _, shapes = jax.eval_shape(
        lambda: model.apply({"params": params}, tokens, position, *extra,
                            mutable=["perturbations"])
    )
    if not shapes.get("perturbations"):
        raise ValueError(
            "input_gradient_norms: the model has no 'perturbations' hook: its encoder must "
            "call self.perturb('embeddings', x) on the input embeddings"
        )
    perturbations = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["perturbations"])

    def loss(perturbations):
        logits = model.apply(
            {"params": params, "perturbations": perturbations}, tokens, position, *extra
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, label).sum()

    # The loss is a sum over rows, so each row's gradient is that example's own.
    (leaf,) = jax.tree.leaves(jax.grad(loss)(perturbations))
    return jnp.linalg.norm(leaf, axis=-1)


def pronoun_attention(model, params, arrays: dict, batch_size: int = 256) -> np.ndarray:
    """``[L, N, H, S]`` self-attention of every layer and head from the pronoun."""

    @jax.jit
    def rows(batch):
        _, maps = capture_attention(
            model, {"params": params}, batch["tokens"], batch["pronoun"]
        )
        weights = jnp.stack([maps[k] for k in layer_paths(maps, "self_attention")])
        index = batch["pronoun"][None, :, None, None, None]
        rows = jnp.take_along_axis(weights, index, axis=3)[:, :, :, 0]  # [L, B, H, S]
        return jnp.moveaxis(rows, 1, 0)

    arrays = {"tokens": arrays["tokens"], "pronoun": arrays["pronoun"]}
    return np.moveaxis(map_in_batches(rows, arrays, batch_size), 0, 1)


def pronoun_probe(weights: np.ndarray, arrays: dict) -> np.ndarray:
    """``[L, H]`` probe accuracy from ``[L, N, H, S]`` pronoun rows."""
    # antecedent_probe takes full maps; the pronoun row is all it reads.
    n = weights.shape[1]
    return antecedent_probe(
        weights[:, :, :, None, :], np.zeros(n, int), arrays["candidates"], arrays["label"]
    )
