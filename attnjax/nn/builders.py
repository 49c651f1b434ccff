"""Models built from an experiment config's blocks, shared by the experiments that train
them (``config.transformer``, ``config.rnn``)."""

from __future__ import annotations

from attnjax.nn.classifier import PositionClassifier
from attnjax.nn.recurrent import RNNConfig, RNNSeq2Seq
from attnjax.nn.transformer import Encoder, EncoderDecoder, TransformerConfig


def seq2seq_model(name: str, config, source_vocab: int, target_vocab: int):
    """``transformer`` (``config.transformer``: ``EncoderDecoder``) or
    ``{gru,lstm,simple}[_attention]`` (``config.rnn``: ``RNNSeq2Seq``, additive attention with
    the suffix) for source/target vocabularies of the given sizes."""
    if name == "transformer":
        t = config.transformer
        return EncoderDecoder(
            TransformerConfig(
                vocab_size=source_vocab,
                target_vocab_size=target_vocab,
                model_dim=t.model_dim,
                num_heads=t.num_heads,
                num_layers=t.num_layers,
                mlp_dim=t.mlp_dim,
                dropout_rate=t.dropout_rate,
                position=t.position,
                pre_ln=t.pre_ln,
                max_len=512,
            )
        )
    cell, _, attention = name.partition("_")
    if cell not in ("gru", "lstm", "simple") or attention not in ("", "attention"):
        raise ValueError(
            f"unknown model {name!r}: expected 'transformer' or 'gru'/'lstm'/'simple' with an "
            "optional '_attention' suffix"
        )
    r = config.rnn
    return RNNSeq2Seq(
        RNNConfig(
            vocab_size=source_vocab,
            target_vocab_size=target_vocab,
            embed_dim=r.embed_dim,
            hidden_dim=r.hidden_dim,
            cell=cell,
            attention="additive" if attention else None,
            bidirectional_encoder=r.bidirectional_encoder,
            dropout_rate=r.dropout_rate,
        )
    )


def encoder_classifier(config, vocab_size: int, max_len: int):
    """A ``PositionClassifier`` over an ``Encoder`` from ``config.transformer``; 2 classes,
    or logits over the vocabulary read at the candidates (``config.readout == "identity"``)."""
    t = config.transformer
    return PositionClassifier(
        Encoder(
            TransformerConfig(
                vocab_size=vocab_size, model_dim=t.model_dim, num_heads=t.num_heads,
                num_layers=t.num_layers, mlp_dim=t.mlp_dim, dropout_rate=t.dropout_rate,
                position=t.position, max_len=max_len,
            )
        ),
        # "identity": logits over the vocabulary, read at the candidates' ids ("choices").
        num_classes=vocab_size if config.readout == "identity" else 2,
    )
