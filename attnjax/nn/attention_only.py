"""The attention-only language model of Elhage et al. 2021 and Olsson et al. 2022, built
from an experiment config's ``model`` block (``experiments/induction.py``,
``experiments/sqrt_dk.py``)."""

from __future__ import annotations

from attnjax.nn.transformer import DecoderOnlyLM, TransformerConfig


def attention_only_lm(model, *, vocab_size: int, max_len: int, num_layers: int | None = None,
                      attention_scale: float | None = None) -> DecoderOnlyLM:
    """A pre-LN decoder-only LM without MLP blocks or dropout, tied embeddings.

    Args:
      model: a config block with ``model_dim``, ``num_heads``, ``num_layers``, ``position``.
      num_layers: overrides ``model.num_layers`` (e.g. the 1-layer control).
      attention_scale: the logit scale; None = 1/sqrt(head dim).
    """
    return DecoderOnlyLM(TransformerConfig(
        vocab_size=vocab_size, model_dim=model.model_dim, num_heads=model.num_heads,
        num_layers=model.num_layers if num_layers is None else num_layers, mlp_dim=0,
        max_len=max_len, dropout_rate=0.0, position=model.position, pre_ln=True,
        tie_embeddings=True, attention_scale=attention_scale,
    ))
