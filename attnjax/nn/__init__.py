"""Flax linen modules: thin wrappers that own parameters and call ``attnjax.ops``."""

from attnjax.nn.attention import MultiHeadAttention
from attnjax.nn.transformer import (
    POSITIONS,
    Decoder,
    DecoderLayer,
    DecoderOnlyLM,
    Encoder,
    EncoderDecoder,
    EncoderLayer,
    MlpBlock,
    PositionEmbedding,
    TransformerConfig,
)

__all__ = [
    "POSITIONS",
    "Decoder",
    "DecoderLayer",
    "DecoderOnlyLM",
    "Encoder",
    "EncoderDecoder",
    "EncoderLayer",
    "MlpBlock",
    "MultiHeadAttention",
    "PositionEmbedding",
    "TransformerConfig",
]
