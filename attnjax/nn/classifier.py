"""Sequence classifiers read out at one position: the probes of Step 3 (coreference,
agreement, recall) put a transformer and recurrent networks behind the same head.

``PositionClassifier(encoder, num_classes)`` runs any ``encoder(tokens [B, L]) -> states
[B, L, D]`` (``attnjax.nn.Encoder``, ``RecurrentStates``) and classifies the state at one
position per example, ``position [B]``: the pronoun for a bidirectional transformer, the last
real token for a left-to-right RNN (the only state that has read the whole sentence).

Both encoders pass their input embeddings through ``self.perturb("embeddings", x)``, so
``jax.grad`` with respect to the ``'perturbations'`` collection gives the gradient of the
output with respect to every input position (``attnjax.analysis.input_gradient_norms``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.nn.recurrent import RNNConfig, RNNEncoder

Array = jax.Array


class RecurrentStates(nn.Module):
    """``RNNEncoder``'s per-position states, ``tokens [B, L] -> [B, L, annotation_dim]``."""

    config: RNNConfig

    @nn.compact
    def __call__(self, tokens: Array, *, deterministic: bool = True) -> Array:
        return RNNEncoder(self.config, name="rnn")(tokens, deterministic=deterministic)[0]


class PositionClassifier(nn.Module):
    """``encoder`` + a two-layer MLP on the state at ``position``.

    Attributes:
      encoder: ``encoder(tokens, deterministic=...) -> [B, L, D]``.
      num_classes: C.
      hidden_dim: MLP width; default D.
    """

    encoder: nn.Module
    num_classes: int
    hidden_dim: int | None = None

    @nn.compact
    def __call__(self, tokens: Array, position: Array, *, deterministic: bool = True) -> Array:
        """tokens: ``[B, L]`` ids; position: ``[B]`` int index to read. Returns ``[B, C]``."""
        if position.shape != tokens.shape[:1] or not jnp.issubdtype(position.dtype, jnp.integer):
            raise ValueError(
                f"PositionClassifier: `position` must be int [B={tokens.shape[0]}], got shape "
                f"{list(position.shape)} dtype {position.dtype}"
            )
        states = self.encoder(tokens, deterministic=deterministic)
        x = jnp.take_along_axis(states, position[:, None, None], axis=1)[:, 0]
        x = nn.gelu(nn.Dense(self.hidden_dim or states.shape[-1], name="hidden")(x))
        return nn.Dense(self.num_classes, name="logits")(x)
