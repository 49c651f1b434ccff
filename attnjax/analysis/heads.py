"""What each head does, and what happens without it.

* ``head_scores``: per-head statistics of attention maps ``[..., H, T, S]``: entropy, mean
  attention distance, previous-token score, score at any relative offset, attention to the
  first token and to punctuation (Clark et al. 2019, "What does BERT look at?").
* ``head_outputs`` / ``ablate_heads``: capture every attention module's per-head output
  (the ``[..., T, H, Dv]`` input of its output projection) and zero- or mean-ablate chosen
  heads (Michel et al. 2019), through an explicit argument and ``flax.linen.intercept_methods``:
  the model is not edited, and any model built from ``nn.MultiHeadAttention`` works.
* ``with_attention_weights``: rerun the model with chosen modules' attention weights replaced
  (permuted, adversarial, uniform...): each head's output becomes ``new_weights @ values``
  (Jain & Wallace 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax.nn.attention import MultiHeadAttention

PUNCTUATION = frozenset(".,;:!?'\"()-[]") | {"[SEP]", "[CLS]", "<eos>", "<bos>"}


def _row_mask(weights: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """``[..., 1, T]`` float mask of the query rows to average over (``valid [B, T]``)."""
    t = weights.shape[-2]
    if valid is None:
        return np.ones((1,) * (weights.ndim - 2) + (t,))
    valid = np.asarray(valid, bool)
    if valid.shape[-1] != t:
        raise ValueError(f"head_scores: `valid` must be [B, T={t}], got {list(valid.shape)}")
    # [B, T] -> [B, 1, T] against weights [..., B, H, T, S] (leading layer axes broadcast).
    return valid.reshape(valid.shape[0], 1, t).astype(float)


def head_scores(
    weights: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    tokens: Sequence[Sequence[str]] | None = None,
    offsets: Sequence[int] = (-1, 0, 1),
    punctuation: frozenset[str] = PUNCTUATION,
) -> dict[str, np.ndarray]:
    """Per-head statistics, each ``[..., H]`` (averaged over batch and query rows).

    Args:
      weights: ``[..., B, H, T, S]`` attention weights (rows sum to 1 or are all zero),
        e.g. ``[L, B, H, T, S]`` from ``analysis.stack_layers``; self-attention for the
        positional scores (query ``i`` and key ``i`` are the same token).
      valid: ``[B, T]`` bool, the query rows that are real tokens (default all).
      tokens: ``B`` lists of ``S`` token strings, for ``punctuation``.
      offsets: relative offsets ``k`` for ``offset_k`` = mean weight on key ``i + k``
        (``offset_-1`` is the previous-token score).

    Returns:
      ``entropy`` (nats), ``normalized_entropy`` (entropy / log(number of valid keys, or S):
      1 for uniform attention), ``mean_distance`` (sum_j w_ij |i - j|), ``first_token`` (w_i0),
      ``previous_token`` (= ``offset_-1``),
      ``offset_<k>`` for each offset, and ``punctuation`` if ``tokens`` are given. Rows
      without a key at the offset count as 0 for it.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim < 4:
        raise ValueError(f"head_scores: `weights` must be [..., B, H, T, S], got {list(w.shape)}")
    t, s = w.shape[-2:]
    rows = np.broadcast_to(_row_mask(w, valid), w.shape[:-1])  # [..., B, H, T]
    count = rows.sum(axis=-1).sum(axis=-2)  # [..., H]: valid rows over the batch

    def mean(per_row: np.ndarray) -> np.ndarray:  # [..., B, H, T] -> [..., H]
        return (per_row * rows).sum(axis=-1).sum(axis=-2) / np.maximum(count, 1)

    entropy = -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1)
    i = np.arange(t)[:, None]
    j = np.arange(s)[None, :]
    # Uniform attention over the keys a row can see has entropy log(#keys): with `valid`,
    # the example's real tokens (self-attention), else all S.
    keys = np.full(w.shape[-4], s, float) if valid is None else np.asarray(valid).sum(-1)
    log_keys = np.log(np.maximum(keys, 2)).reshape(-1, 1, 1)  # [B, 1, 1]
    scores = {
        "entropy": mean(entropy),
        "normalized_entropy": mean(entropy / log_keys),
        "mean_distance": mean((w * np.abs(i - j)).sum(-1)),
        "first_token": mean(w[..., 0]),
    }
    for k in offsets:
        on_offset = (j == i + k).astype(float)  # [T, S]
        scores[f"offset_{k}"] = mean((w * on_offset).sum(-1))
    if -1 in offsets:
        scores["previous_token"] = scores["offset_-1"]
    if tokens is not None:
        is_punct = np.array([[tok in punctuation for tok in seq] for seq in tokens], float)
        if is_punct.shape != (w.shape[-4], s):
            raise ValueError(
                f"head_scores: `tokens` must be B={w.shape[-4]} lists of S={s} strings, got "
                f"{list(is_punct.shape)}"
            )
        scores["punctuation"] = mean((w * is_punct[:, None, None, :]).sum(-1))
    return scores


def _attention_output_hook(on_output: Callable[[str, jax.Array], jax.Array]):
    """An ``intercept_methods`` interceptor calling ``on_output(path, heads)`` on the input
    ``[..., T, H, Dv]`` of every ``MultiHeadAttention``'s output projection; what it
    returns goes into the projection instead."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name == "__call__" and module.name == "out"
                and isinstance(module.parent, MultiHeadAttention)):
            path = "/".join(module.parent.path)
            args = (on_output(path, args[0]), *args[1:])
        return next_fun(*args, **kwargs)

    return interceptor


def head_outputs(model: nn.Module, variables: Any, *args, method=None, **kwargs
                 ) -> tuple[Any, dict[str, jax.Array]]:
    """Run the model and capture every attention module's per-head output.

    Returns ``(output, {module path: [..., T, H, Dv]})``, e.g.
    ``"encoder/layer_0/self_attention"``: each head's ``softmax(q k^T) v`` before the output
    projection mixes the heads.
    """
    captured: dict[str, jax.Array] = {}

    def record(path, heads):
        captured[path] = heads
        return heads

    with nn.intercept_methods(_attention_output_hook(record)):
        output = model.apply(variables, *args, method=method, **kwargs)
    return output, captured


def mean_head_outputs(model: nn.Module, variables: Any, *args, valid: jax.Array | None = None,
                      method=None, **kwargs) -> dict[str, jax.Array]:
    """``{path: [H, Dv]}``: every head's output averaged over the batch and the positions
    (``valid [B, T]``: real query tokens only), the replacement for mean-ablation."""
    _, outputs = head_outputs(model, variables, *args, method=method, **kwargs)
    means = {}
    for path, heads in outputs.items():
        if valid is None:
            means[path] = heads.reshape(-1, *heads.shape[-2:]).mean(axis=0)
        else:
            weight = valid.astype(heads.dtype)[..., None, None]
            means[path] = (heads * weight).sum(axis=(0, 1)) / jnp.maximum(weight.sum((0, 1)), 1)
    return means


def ablate_heads(
    model: nn.Module,
    variables: Any,
    *args,
    heads: Mapping[str, Sequence[int]],
    mode: str = "zero",
    means: Mapping[str, jax.Array] | None = None,
    method=None,
    **kwargs,
) -> Any:
    """``model.apply(variables, *args, **kwargs)`` with chosen heads' outputs replaced.

    Args:
      heads: ``{attention module path: [head indices]}`` (paths as in ``head_outputs`` /
        ``analysis.capture_attention``). Every path must exist in the model.
      mode: ``"zero"``: the heads' outputs become 0 (their contribution to the output
        projection vanishes, its bias stays); ``"mean"``: they become ``means[path][h]``
        (``mean_head_outputs`` on reference data), removing what the head says about this
        input while keeping its average effect.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablate_heads: `mode` must be 'zero' or 'mean', got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("ablate_heads: mode='mean' needs `means` (from mean_head_outputs)")
    seen: set[str] = set()

    def replace(path, outputs):
        if path not in heads:
            return outputs
        seen.add(path)
        h = outputs.shape[-2]
        chosen = np.zeros(h, bool)
        index = np.asarray(list(heads[path]), int)
        if index.size and (index.min() < 0 or index.max() >= h):
            raise ValueError(f"ablate_heads: heads {list(index)} out of range for {path!r} "
                             f"with {h} heads")
        chosen[index] = True
        chosen = jnp.asarray(chosen)[:, None]  # [H, 1]
        fill = jnp.zeros_like(outputs) if mode == "zero" else jnp.broadcast_to(
            jnp.asarray(means[path], outputs.dtype), outputs.shape)
        return jnp.where(chosen, fill, outputs)

    with nn.intercept_methods(_attention_output_hook(replace)):
        output = model.apply(variables, *args, method=method, **kwargs)
    missing = sorted(set(heads) - seen)
    if missing:
        raise ValueError(f"ablate_heads: no attention module at {missing}; the model has "
                         "the paths that head_outputs reports")
    return output


def with_attention_weights(
    model: nn.Module,
    variables: Any,
    *args,
    weights: Mapping[str, jax.Array],
    method=None,
    **kwargs,
) -> Any:
    """``model.apply(variables, *args, **kwargs)`` with the attention weights of chosen
    modules replaced: ``{path: [..., H, T, S]}``. Each replaced module's per-head output
    becomes ``sum_s new_weights[h, t, s] * values[s, h]``; everything else (projections,
    residuals, other layers) runs as usual. Not for decode mode (a KV cache)."""
    values: dict[str, jax.Array] = {}
    seen: set[str] = set()

    def interceptor(next_fun, call_args, call_kwargs, context):
        module = context.module
        parent = module.parent
        if context.method_name != "__call__" or not isinstance(parent, MultiHeadAttention):
            return next_fun(*call_args, **call_kwargs)
        path = "/".join(parent.path)
        if path not in weights:
            return next_fun(*call_args, **call_kwargs)
        if parent.decode:
            raise ValueError(f"with_attention_weights: {path!r} is in decode mode")
        if module.name == "value":
            values[path] = next_fun(*call_args, **call_kwargs)  # [..., S, Hk, Dv]
            return values[path]
        if module.name == "out":
            seen.add(path)
            v = values[path]
            h = call_args[0].shape[-2]
            v = jnp.repeat(v, h // v.shape[-2], axis=-2)  # GQA: each query head's K/V head
            new = jnp.asarray(weights[path], v.dtype)
            expected = (*call_args[0].shape[:-3], h, call_args[0].shape[-3], v.shape[-3])
            if new.shape != expected:
                raise ValueError(f"with_attention_weights: weights for {path!r} must be "
                                 f"{list(expected)} [..., H, T, S], got {list(new.shape)}")
            heads = jnp.einsum("...hts,...shd->...thd", new, v)
            return next_fun(heads, *call_args[1:], **call_kwargs)
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(interceptor):
        output = model.apply(variables, *args, method=method, **kwargs)
    missing = sorted(set(weights) - seen)
    if missing:
        raise ValueError(f"with_attention_weights: no attention module at {missing}")
    return output
