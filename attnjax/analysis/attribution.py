"""Which input tokens matter for an output, measured without looking at attention, and how
well attention agrees (Jain & Wallace 2019, "Attention is not Explanation").

* ``embedding_function``: the model's input embeddings ``x [B, T, D]`` and a function
  ``score(x') -> [B]`` that reruns the model on replacement embeddings ``x'`` (through the
  ``perturb("embeddings")`` hook of ``nn.Encoder`` / ``nn.RNNEncoder``);
* ``gradient_x_input``: ``sum_d x_td * d score / d x_td`` per token;
* ``leave_one_out``: ``score(x) - score(x with token t's embedding replaced)`` per token;
* ``kendall_tau`` / ``spearman``: rank correlation between two importance vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array], jax.Array]


def embedding_function(
    model: nn.Module, variables: Any, *args, output: Callable[[Any], jax.Array], **kwargs
) -> tuple[jax.Array, ScoreFn]:
    """``(x [B, T, D], score)`` for ``model.apply(variables, *args, **kwargs)``.

    ``output(model_output) -> [B]`` picks the scalar per example to explain (e.g. the logit
    of the predicted class). ``score(x')`` runs the model with its input embeddings
    replaced by ``x'`` (same shape), differentiably. The model must route its embeddings
    through ``self.perturb("embeddings", x)``.
    """
    params = {k: v for k, v in variables.items() if k != "perturbations"}
    _, state = jax.eval_shape(
        lambda: model.apply(params, *args, mutable=["perturbations"], **kwargs))
    if not state.get("perturbations"):
        raise ValueError("embedding_function: the model has no 'perturbations' hook: its "
                         "encoder must call self.perturb('embeddings', x)")
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state["perturbations"])
    treedef = jax.tree.structure(zeros)
    if treedef.num_leaves != 1:
        raise ValueError("embedding_function: expected one 'embeddings' hook, found "
                         f"{treedef.num_leaves}")

    def is_embed_output(module, method_name):
        return (method_name == "__call__" and isinstance(module, nn.Embed)
                and module.name == "embed")

    _, captured = model.apply(params, *args, capture_intermediates=is_embed_output,
                              mutable=["intermediates"], **kwargs)
    # The intermediates also hold sown attention maps: keep the embedding layer's output.
    found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(
                 captured.get("intermediates", {}))[0]
             if [getattr(p, "key", None) for p in path[-3:-1]] == ["embed", "__call__"]]
    if len(found) != 1:
        raise ValueError(f"embedding_function: expected one nn.Embed named 'embed' feeding the "
                         f"hook, found {len(found)}")
    (embeddings,) = found

    def score(replacement: jax.Array) -> jax.Array:
        if replacement.shape != embeddings.shape:
            raise ValueError(f"score: embeddings must be {list(embeddings.shape)}, got "
                             f"{list(replacement.shape)}")
        delta = jax.tree.unflatten(treedef, [replacement - embeddings])
        return output(model.apply({**params, "perturbations": delta}, *args, **kwargs))

    return embeddings, score


def gradient_x_input(score: ScoreFn, embeddings: jax.Array) -> jax.Array:
    """``[B, T]``: ``sum_d x_btd * d score_b / d x_btd`` (scores of different examples do not
    interact, so one gradient of their sum gives every example's own)."""
    grads = jax.grad(lambda x: jnp.sum(score(x)))(embeddings)
    return jnp.sum(grads * embeddings, axis=-1)


def leave_one_out(score: ScoreFn, embeddings: jax.Array, replacement: jax.Array | None = None
                  ) -> jax.Array:
    """``[B, T]``: ``score(x) - score(x with position t set to replacement)``.

    ``replacement``: ``[D]`` or ``[B, T, D]`` embeddings put in place of the left-out token
    (default zeros, i.e. the token contributes nothing but its position).
    """
    b, t, d = embeddings.shape
    fill = jnp.zeros((d,), embeddings.dtype) if replacement is None else replacement
    fill = jnp.broadcast_to(fill, embeddings.shape)
    full = score(embeddings)
    eye = jnp.eye(t, dtype=bool)[:, None, :, None]  # [T (left out), 1, T, 1]
    variants = jnp.where(eye, fill[None], embeddings[None])  # [T, B, T, D]
    scores = jax.lax.map(score, variants)  # [T, B]
    return (full[None] - scores).T


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); nan if constant."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties corrected), as ``scipy.stats.kendalltau``; nan if constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"kendall_tau: need two equal-length vectors, got {a.shape}, {b.shape}")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), k=1)
    concordance = (da * db)[upper].sum()
    ties_a = (da[upper] != 0).sum()
    ties_b = (db[upper] != 0).sum()
    denominator = np.sqrt(float(ties_a) * float(ties_b))
    return float(concordance / denominator) if denominator > 0 else float("nan")
