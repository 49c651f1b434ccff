"""Flax linen modules: thin wrappers that own parameters and call ``attnjax.ops``."""

from attnjax.nn.attention import MultiHeadAttention, sow_attention_weights
from attnjax.nn.builders import encoder_classifier, seq2seq_model
from attnjax.nn.classifier import PositionClassifier, RecurrentStates
from attnjax.nn.recurrent import AdditiveAttention, RNNConfig, RNNDecoder, RNNEncoder, RNNSeq2Seq
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
    "AdditiveAttention",
    "POSITIONS",
    "Decoder",
    "DecoderLayer",
    "DecoderOnlyLM",
    "Encoder",
    "EncoderDecoder",
    "EncoderLayer",
    "MlpBlock",
    "MultiHeadAttention",
    "PositionClassifier",
    "PositionEmbedding",
    "RNNConfig",
    "RNNDecoder",
    "RNNEncoder",
    "RNNSeq2Seq",
    "RecurrentStates",
    "TransformerConfig",
    "encoder_classifier",
    "seq2seq_model",
    "sow_attention_weights",
]
