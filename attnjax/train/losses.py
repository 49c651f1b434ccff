"""Token-level losses and metrics for sequence models, with padding weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def cross_entropy(
    logits: Array, targets: Array, weights: Array, *, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """Summed (label-smoothed) cross-entropy and the summed weights.

    Args:
      logits: ``[B, T, V]``.
      targets: ``[B, T]`` integer ids.
      weights: ``[B, T]`` 1 for real tokens, 0 for padding.
      label_smoothing: mass spread uniformly over the vocabulary (Szegedy et al. 2016).

    Returns:
      ``(loss_sum, weight_sum)``; the mean is their ratio. Sums (not means) let callers
      aggregate exactly across batches and devices.
    """
    if logits.shape[:-1] != targets.shape or targets.shape != weights.shape:
        raise ValueError(
            f"cross_entropy: `logits` [B, T, V], `targets` [B, T] and `weights` [B, T] must "
            f"agree, got {list(logits.shape)}, {list(targets.shape)}, {list(weights.shape)}"
        )
    vocab = logits.shape[-1]
    labels = optax.smooth_labels(jax.nn.one_hot(targets, vocab), label_smoothing)
    losses = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
    if label_smoothing > 0.0:
        # Subtract the entropy of the smoothed labels so that a perfect model scores 0.
        p_other = label_smoothing / vocab
        p_true = 1.0 - label_smoothing + p_other
        floor = -(p_true * jnp.log(p_true) + (vocab - 1) * p_other * jnp.log(p_other))
        losses = losses - floor
    weights = weights.astype(jnp.float32)
    return jnp.sum(losses * weights), jnp.sum(weights)


def token_accuracy(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """``(correct_sum, weight_sum)`` of argmax predictions over real tokens."""
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    return jnp.sum(correct * weights), jnp.sum(weights)


def sequence_exact_match(predictions: Array, targets: Array, pad_id: int = 0) -> Array:
    """``[B]`` bool: the predicted ids equal the targets on every non-pad target position
    and predict nothing extra (compare after both are padded to one length)."""
    if predictions.shape != targets.shape:
        raise ValueError(
            f"sequence_exact_match: shapes differ: {list(predictions.shape)} vs "
            f"{list(targets.shape)} (pad both to one length first)"
        )
    return jnp.all(predictions == targets, axis=-1)
