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
    def __call__(self, tokens: Array, position: Array, choices: Array | None = None, *,
                 deterministic: bool = True) -> Array:
        """Classify the state at ``position``.

        Args:
          tokens: ``[B, L]`` ids.
          position: ``[B]`` int index to read.
          choices: optional ``[B, K]`` class ids: only their logits are returned, so the
            label is an index into ``choices``. With ``num_classes`` = the vocabulary size
            and ``choices`` = the candidates' token ids this picks an antecedent *by its
            identity*: the state read must carry which word it refers to, not only where.

        Returns:
          ``[B, C]`` logits, or ``[B, K]`` with ``choices``.
        """
        if position.shape != tokens.shape[:1] or not jnp.issubdtype(position.dtype, jnp.integer):
            raise ValueError(
                f"PositionClassifier: `position` must be int [B={tokens.shape[0]}], got shape "
                f"{list(position.shape)} dtype {position.dtype}"
            )
        states = self.encoder(tokens, deterministic=deterministic)
        x = jnp.take_along_axis(states, position[:, None, None], axis=1)[:, 0]
        x = nn.gelu(nn.Dense(self.hidden_dim or states.shape[-1], name="hidden")(x))
        logits = nn.Dense(self.num_classes, name="logits")(x)
        if choices is None:
            return logits
        if choices.ndim != 2 or choices.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"PositionClassifier: `choices` must be [B={tokens.shape[0]}, K], got "
                f"{list(choices.shape)}"
            )
        return jnp.take_along_axis(logits, choices, axis=1)
