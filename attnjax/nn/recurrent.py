"""Recurrent sequence-to-sequence baselines, with and without additive attention.

Without attention (Sutskever et al. 2014; Cho et al. 2014) the decoder sees the source only
through its initial state: the whole sentence squeezed into one fixed-size vector, the
bottleneck whose memory of early tokens fades with length. With ``attention="additive"``
(Bahdanau, Cho & Bengio 2015) every decoder step re-reads all encoder states through
``attnjax.ops.additive_attention``.

``RNNSeq2Seq`` has the calling convention of ``attnjax.nn.EncoderDecoder``
(``source [B, S], target_in [B, T] -> logits [B, T, V]``), so the seq2seq loss, evaluation
and ``attnjax.train.decode`` (through ``RNNSeq2Seq.decoding``) work unchanged. Attention
weights are sown as ``'intermediates'`` ``.../cross_attention/attention_weights`` with shape
``[B, 1, T, S]`` (one head), like a transformer's cross-attention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax import ops

Array = jax.Array
# attnjax.train.decoding's protocol (not imported: train sits above nn).
StepFn = Callable[[Any, Array], tuple[Array, Any]]
CELLS = ("gru", "lstm", "simple")
ATTENTIONS = (None, "additive")


@dataclasses.dataclass(frozen=True)
class RNNConfig:
    """Hyper-parameters of ``RNNSeq2Seq``.

    Attributes:
      vocab_size: source vocabulary size.
      target_vocab_size: decoder vocabulary; default ``vocab_size``.
      embed_dim: token embedding width (source and target).
      hidden_dim: recurrent state width (per direction in a bidirectional encoder).
      cell: ``"gru"`` (Cho et al. 2014), ``"lstm"`` (Hochreiter & Schmidhuber 1997) or
        ``"simple"`` (Elman, ``tanh(W x + U h + b)``).
      attention: ``None`` (fixed-vector bottleneck) or ``"additive"`` (Bahdanau et al. 2015).
      bidirectional_encoder: read the source both ways; annotations are
        ``[forward; backward]`` states (Bahdanau et al. 2015, sec. 3.2).
      num_layers: stacked recurrent layers, in the encoder and in the decoder.
      dropout_rate: on embeddings, between stacked layers and before the output layer, never
        on recurrent connections (Zaremba et al. 2014).
      pad_id: padding token id; sources must be right-padded with it.
      attention_dim: width of the additive-attention MLP; default ``hidden_dim``.
    """

    vocab_size: int
    target_vocab_size: int | None = None
    embed_dim: int = 64
    hidden_dim: int = 128
    cell: str = "gru"
    attention: str | None = None
    bidirectional_encoder: bool = False
    num_layers: int = 1
    dropout_rate: float = 0.1
    pad_id: int = 0
    attention_dim: int | None = None

    def __post_init__(self):
        def positive(name, value, *, optional=False):
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RNNConfig: `{name}` must be a positive int, got {value!r}")

        positive("vocab_size", self.vocab_size)
        positive("target_vocab_size", self.target_vocab_size, optional=True)
        positive("embed_dim", self.embed_dim)
        positive("hidden_dim", self.hidden_dim)
        positive("num_layers", self.num_layers)
        positive("attention_dim", self.attention_dim, optional=True)
        if self.cell not in CELLS:
            raise ValueError(f"RNNConfig: `cell` must be one of {CELLS}, got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"RNNConfig: `attention` must be one of {ATTENTIONS}, got {self.attention!r}"
            )
        if not isinstance(self.bidirectional_encoder, bool):
            raise ValueError(
                "RNNConfig: `bidirectional_encoder` must be a bool, got "
                f"{self.bidirectional_encoder!r}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(
                f"RNNConfig: `dropout_rate` must be in [0, 1), got {self.dropout_rate!r}"
            )
        smallest = min(self.vocab_size, self.target_vocab_size or self.vocab_size)
        if not 0 <= self.pad_id < smallest:
            raise ValueError(
                f"RNNConfig: `pad_id` must be a token id in [0, {smallest}) of both "
                f"vocabularies, got {self.pad_id!r}"
            )

    @property
    def annotation_dim(self) -> int:
        """Width of the encoder states the decoder attends to."""
        return self.hidden_dim * (2 if self.bidirectional_encoder else 1)

    def replace(self, **changes) -> RNNConfig:
        return dataclasses.replace(self, **changes)


def _make_cell(cfg: RNNConfig, **kwargs) -> nn.RNNCellBase:
    cell = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell, "simple": nn.SimpleCell}[cfg.cell]
    return cell(cfg.hidden_dim, **kwargs)


def _output_of(carry: Any) -> Array:
    """The state a cell exposes: ``h`` of an LSTM's ``(c, h)``, the carry itself otherwise."""
    return carry[1] if isinstance(carry, tuple) else carry


def _check_tokens(name: str, tokens: Array) -> None:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"`{name}` must be integer token ids of shape [B, L], got shape "
            f"{list(tokens.shape)} dtype {tokens.dtype}"
        )


class RNNEncoder(nn.Module):
    """Embedding + ``num_layers`` (bi)directional recurrent layers over a right-padded source."""

    config: RNNConfig

    @nn.compact
    def __call__(self, source: Array, *, deterministic: bool = True):
        """Encode ``source``.

        Args:
          source: ``[B, S]`` int ids, right-padded with ``pad_id``.

        Returns:
          ``(annotations [B, S, Dh], initial_carry, source_valid [B, S])``: ``Dh`` is
          ``config.annotation_dim`` (positions past a row's length hold unused values), and
          ``initial_carry`` is a tuple of one decoder carry per layer, each ``[B, hidden_dim]``
          (``(c, h)`` for an LSTM), taken at the last real source token.
        """
        cfg = self.config
        _check_tokens("source", source)
        source_valid = ops.valid_from_tokens(source, cfg.pad_id)
        lengths = jnp.sum(source_valid, axis=-1, dtype=jnp.int32)
        x = nn.Embed(cfg.vocab_size, cfg.embed_dim, name="embed")(source)
        if not self.is_initializing():  # d output / d input hook, see nn.Encoder
            x = self.perturb("embeddings", x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        # seq_lengths makes the returned carry the one after the last real token, and makes
        # the reversed direction start at that token (nn.RNN flips each row within its
        # length), so right padding never reaches a real position's state. parent=None lets
        # nn.RNN adopt the cell (params under forward_0/cell/...).
        rnn = lambda name, **kw: nn.RNN(
            _make_cell(cfg, parent=None), return_carry=True, name=name, **kw
        )
        carries = []
        for layer in range(cfg.num_layers):
            if layer:
                x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
            carry, forward = rnn(f"forward_{layer}")(x, seq_lengths=lengths)
            if cfg.bidirectional_encoder:
                backward_carry, backward = rnn(
                    f"backward_{layer}", reverse=True, keep_order=True
                )(x, seq_lengths=lengths)
                x = jnp.concatenate([forward, backward], axis=-1)
                carry = self._bridge(carry, backward_carry, layer)
            else:
                x = forward
            # A source of only padding has no last real token: start from zeros.
            carry = jax.tree.map(lambda c: jnp.where(lengths[:, None] > 0, c, 0.0), carry)
            carries.append(carry)
        return x, tuple(carries), source_valid

    def _bridge(self, forward_carry, backward_carry, layer: int):
        """``s_0 = tanh(W_s [h_fwd; h_bwd])`` for each carry leaf (``c`` and ``h`` of an LSTM).

        Bahdanau et al. 2015 (appendix A.2.2) use the backward state alone; the forward final
        state adds the end of the sentence.
        """
        leaves, treedef = jax.tree.flatten(forward_carry)
        bridged = [
            jnp.tanh(
                nn.Dense(self.config.hidden_dim, name=f"bridge_{layer}_{i}")(
                    jnp.concatenate([f, b], axis=-1)
                )
            )
            for i, (f, b) in enumerate(zip(leaves, jax.tree.leaves(backward_carry), strict=True))
        ]
        return jax.tree.unflatten(treedef, bridged)


class AdditiveAttention(nn.Module):
    """One decoder step of Bahdanau attention over pre-projected encoder states.

    Owns ``W_q`` (``W_a`` in the paper) and ``v``; the keys ``W_k h`` (``U_a h_j``) are
    projected once per source by the caller, since they do not depend on the step
    (Bahdanau et al. 2015, appendix A.1.2). Sows the weights ``[B, 1, S]`` (one head); under
    the decoder's scan over time they stack to ``[B, 1, T, S]``.
    """

    attention_dim: int

    @nn.compact
    def __call__(self, query: Array, keys: Array, values: Array, mask: Array) -> Array:
        """Context vector for one step.

        Args:
          query: ``[B, Dq]`` previous decoder state ``s_{t-1}``.
          keys: ``[B, S, A]`` projected encoder states ``W_k h``.
          values: ``[B, S, Dv]`` encoder states ``h``.
          mask: ``[B, S]`` bool, True at real source positions.

        Returns:
          ``[B, Dv]`` context ``c_t``; zeros for a row with no real position.
        """
        query_proj = nn.Dense(self.attention_dim, use_bias=False, name="query")(query)
        v = self.param(
            "v", nn.initializers.normal(self.attention_dim**-0.5), (self.attention_dim,)
        )
        context, weights = ops.additive_attention(
            query_proj[:, None, :], keys, values, v, mask=mask[:, None, :]
        )
        # weights [B, T=1, S] read as [B, H=1, S]; the scan inserts the time axis at 2.
        self.sow("intermediates", "attention_weights", weights)
        return context[:, 0]


class _DecoderStep(nn.Module):
    """One target step: (attend), run the stacked cells, emit the output-layer input."""

    config: RNNConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, carry: tuple, inputs: Array, memory: tuple | None):
        """carry: one cell carry per layer; inputs: ``[B, E]`` embedded ``y_{t-1}``;
        memory: ``(keys [B, S, A], values [B, S, Dh], valid [B, S])`` with attention."""
        cfg = self.config
        x = inputs
        if cfg.attention is not None:
            keys, values, valid = memory
            # c_t is computed from s_{t-1} and fed to the cell with y_{t-1}: s_t =
            # f(s_{t-1}, y_{t-1}, c_t) (Bahdanau et al. 2015, sec. 3.1, eq. 4-6).
            context = AdditiveAttention(
                cfg.attention_dim or cfg.hidden_dim, name="cross_attention"
            )(_output_of(carry[-1]), keys, values, valid)
            x = jnp.concatenate([x, context], axis=-1)
        new_carry = []
        for layer in range(cfg.num_layers):
            if layer:
                x = nn.Dropout(cfg.dropout_rate)(x, deterministic=self.deterministic)
            layer_carry, x = _make_cell(cfg, name=f"cell_{layer}")(carry[layer], x)
            new_carry.append(layer_carry)
        if cfg.attention is not None:
            # The prediction sees the context too: g(y_{t-1}, s_t, c_t) in sec. 3.1, eq. 4;
            # here g is one linear layer on [s_t; c_t].
            x = jnp.concatenate([x, context], axis=-1)
        return tuple(new_carry), x


class RNNDecoder(nn.Module):
    """Target embedding, the recurrent steps (scanned over time) and the output layer."""

    config: RNNConfig

    @nn.compact
    def __call__(self, state: dict, tokens: Array, *, deterministic: bool = True):
        """Run ``T`` steps from ``state`` (``RNNSeq2Seq.encode``'s output).

        Args:
          state: ``{"carry": per-layer carries [B, hidden_dim]}``, plus with attention
            ``"memory_keys" [B, S, A]``, ``"memory" [B, S, Dh]``, ``"memory_valid" [B, S]``.
          tokens: ``[B, T]`` decoder input ids (BOS + target, shifted right).

        Returns:
          ``(logits [B, T, V], state after the T steps)``.
        """
        cfg = self.config
        _check_tokens("tokens", tokens)
        vocab = cfg.target_vocab_size or cfg.vocab_size
        x = nn.Embed(vocab, cfg.embed_dim, name="embed")(tokens)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        memory = None
        if cfg.attention is not None:
            memory = (state["memory_keys"], state["memory"], state["memory_valid"])
        steps = nn.scan(
            _DecoderStep,
            variable_broadcast="params",
            variable_axes={"intermediates": 2},
            split_rngs={"params": False, "dropout": True},
            in_axes=(1, nn.broadcast),
            out_axes=1,
        )
        carry, outputs = steps(cfg, deterministic=deterministic, name="step")(
            state["carry"], x, memory
        )
        outputs = nn.Dropout(cfg.dropout_rate)(outputs, deterministic=deterministic)
        logits = nn.Dense(vocab, name="logits")(outputs)
        return logits, {**state, "carry": carry}


class RNNSeq2Seq(nn.Module):
    """Encoder-decoder RNN, a drop-in for ``EncoderDecoder`` in training and decoding."""

    config: RNNConfig

    def setup(self):
        cfg = self.config
        self.encoder = RNNEncoder(cfg)
        self.decoder = RNNDecoder(cfg)
        if cfg.attention is not None:
            self.memory_keys = nn.Dense(cfg.attention_dim or cfg.hidden_dim)

    def encode(self, source: Array, *, deterministic: bool = True) -> dict:
        """source: ``[B, S]`` right-padded ids -> the decoder's initial ``state`` (a dict
        whose leaves all have the batch leading; see ``RNNDecoder``)."""
        annotations, carry, source_valid = self.encoder(source, deterministic=deterministic)
        state = {"carry": carry}
        if self.config.attention is not None:
            state.update(
                memory_keys=self.memory_keys(annotations),
                memory=annotations,
                memory_valid=source_valid,
            )
        return state

    def decode(self, state: dict, target_in: Array, *, deterministic: bool = True):
        """``(logits [B, T, V], state)`` for ``target_in [B, T]`` starting from ``state``."""
        return self.decoder(state, target_in, deterministic=deterministic)

    def __call__(self, source: Array, target_in: Array, *, deterministic: bool = True) -> Array:
        """source ``[B, S]``, target_in ``[B, T]`` -> logits ``[B, T, V]`` (teacher forcing)."""
        state = self.encode(source, deterministic=deterministic)
        return self.decode(state, target_in, deterministic=deterministic)[0]

    @nn.nowrap
    def decoding(self, params: Any, source: Array, max_len: int) -> tuple[StepFn, dict]:
        """Step function and initial state for ``attnjax.train.decoding``.

        Args:
          params: the model's ``params`` collection.
          source: ``[B, S]`` ids.
          max_len: unused: an RNN's state does not grow with the output.

        Returns:
          ``(step_fn, state)`` with ``step_fn(state, tokens [B, 1]) -> (logits [B, V], state)``.
        """
        del max_len
        state = self.apply({"params": params}, source, method=RNNSeq2Seq.encode)

        def step_fn(state, tokens):
            logits, state = self.apply(
                {"params": params}, state, tokens, method=RNNSeq2Seq.decode
            )
            return logits[:, -1], state

        return step_fn, state
