"""Transformer encoder, decoder, encoder-decoder and decoder-only LM (Vaswani et al. 2017).

Every attention goes through ``MultiHeadAttention``, so every layer's weights can be captured
(``.../self_attention/attention_weights``, ``.../cross_attention/attention_weights``) with
``mutable=['intermediates']`` once sowing is asked for: ``TransformerConfig(sow_weights=True)``,
or ``attnjax.nn.sow_attention_weights()`` around an unedited model (what
``analysis.capture_attention`` does).

Packed documents: every model takes ``segment_ids`` (``[B, L]`` int; ``EncoderDecoder``:
``source_segment_ids`` and ``target_segment_ids``). Attention then stays within a document,
in the self-attention of the encoder and of the decoder and, for ``EncoderDecoder``, in the
cross-attention (target document ``n`` reads source document ``n``); sinusoidal and learned
positions restart at 0 in every document (``ops.segment_positions``; RoPE and ALiBi are
relative and need no reset), so a packed document gets the outputs it gets alone. Documents
are contiguous runs of one id; padding tokens (``pad_id``) stay masked as keys.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax import ops
from attnjax.nn.attention import MultiHeadAttention

Array = jax.Array
POSITIONS = ("none", "sinusoidal", "learned", "rope", "alibi")
ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,  # tanh approximation
    "gelu_exact": lambda x: nn.gelu(x, approximate=False),
    "silu": nn.silu,  # x * sigmoid(x), the "swish" of SwiGLU (Llama)
}
NORMS = ("layernorm", "rmsnorm")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters shared by every module in this file.

    Attributes:
      vocab_size: source (or LM) vocabulary size.
      target_vocab_size: decoder vocabulary of an encoder-decoder; default ``vocab_size``.
      model_dim: width of the residual stream.
      num_heads: attention heads per layer; num_kv_heads: key/value heads (GQA), default all.
      num_layers: encoder layers (or LM layers); num_decoder_layers: default ``num_layers``.
      mlp_dim: hidden width of the position-wise MLP; 0 = no MLP blocks (an attention-only
        transformer, as in Elhage et al. 2021 and Olsson et al. 2022).
      max_len: longest sequence (learned position table size, decode cache size).
      dropout_rate: on embeddings and residual branches; attention_dropout_rate: on weights.
      position: ``"none" | "sinusoidal" | "learned" | "rope" | "alibi"``. Without one,
        self-attention is permutation equivariant: it cannot see word order.
      pre_ln: LayerNorm before each sub-layer (Xiong et al. 2020) instead of after (the paper).
      tie_embeddings: output projection = transposed decoder token embedding (Press & Wolf 2017).
      normalize_qk: LayerNorm on queries and keys (QK-norm).
      pad_id: padding token id, masked out of attention.
      activation: ``"relu"`` (the paper), ``"gelu"`` (tanh approximation, flax's default),
        ``"gelu_exact"`` (the erf form, BERT's ``hidden_act="gelu"``) or ``"silu"``.
      gated_mlp: a gated MLP ``wo(act(wi_0 x) * wi_1 x)`` (Shazeer 2020; with ``"silu"`` it
        is Llama's SwiGLU) instead of ``wo(act(wi x))``.
      norm: ``"layernorm"`` or ``"rmsnorm"`` (Zhang & Sennrich 2019; Llama: no mean
        subtraction, no bias), for every norm of the model.
      layer_norm_epsilon: epsilon of every norm (BERT: 1e-12, Llama: 1e-5).
      use_bias: biases in the attention and MLP projections (Llama has none).
      scale_tied_logits: with tied embeddings, divide the logits by sqrt(model_dim) (the
        unit-variance embeddings of attnjax's own models); False for imported models whose
        logits are the plain ``x @ E^T`` (Llama, GPT-2).
      type_vocab_size: > 0 adds token-type embeddings to the encoder input (BERT's sentence
        A/B "segments"; unrelated to the packed-document ``segment_ids``).
      embedding_norm: LayerNorm on the encoder's summed input embeddings (BERT).
      decode: build modules for step-by-step decoding with a KV cache.
      local_window_size: ``None`` (full attention), an int ``w`` or ``(left, right)``:
        every self-attention sees keys ``i - left <= j <= i + right`` only (with the
        decoder's causal mask, ``w`` or ``(w, 0)`` is sliding-window attention, Beltagy et
        al. 2020). The chunked implementation then skips the key blocks outside the band.
      attention_implementation: ``ops.dot_product_attention``'s ``implementation`` for every
        attention layer: ``None`` (the best for the backend and shape), ``"xla"``,
        ``"chunked"``, ``"flash"`` or ``"cudnn"``.
      sow_weights: every attention layer sows its ``[B, H, T, S]`` weights into
        ``'intermediates'`` where that collection is mutable, running the ``"xla"``
        implementation to form them; off by default (for a model built without it,
        ``attnjax.nn.sow_attention_weights()``).
      attention_scale: the attention logit scale; None (the default) is 1/sqrt(head dim),
        1.0 the unscaled dot product (experiments/sqrt_dk.py). Passed to the attention
        module only when set, so an ``attention_cls`` without a ``scale`` field still fits
        (so are ``local_window_size``, ``attention_implementation`` and ``sow_weights``, and
        the segment ids at call time).
      attention_cls: the attention module class; default ``MultiHeadAttention``. Anything
        with its constructor and call signature fits: an ablation wrapper, or a peer
        implementation to benchmark against (benchmarks/train_throughput.py).
    """

    vocab_size: int
    target_vocab_size: int | None = None
    model_dim: int = 128
    num_heads: int = 4
    num_kv_heads: int | None = None
    num_layers: int = 2
    num_decoder_layers: int | None = None
    mlp_dim: int = 512
    max_len: int = 512
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    position: str = "sinusoidal"
    pre_ln: bool = True
    tie_embeddings: bool = True
    normalize_qk: bool = False
    pad_id: int = 0
    activation: str = "relu"
    gated_mlp: bool = False
    norm: str = "layernorm"
    layer_norm_epsilon: float = 1e-6
    use_bias: bool = True
    scale_tied_logits: bool = True
    type_vocab_size: int = 0
    embedding_norm: bool = False
    rope_base: float = 10_000.0
    decode: bool = False
    local_window_size: int | tuple[int, int] | None = None
    attention_implementation: str | None = None
    sow_weights: bool = False
    dtype: Any = jnp.float32
    attention_scale: float | None = None
    attention_cls: Any = None

    def __post_init__(self):
        if self.position not in POSITIONS:
            raise ValueError(
                f"TransformerConfig: `position` must be one of {POSITIONS}, got {self.position!r}"
            )
        if self.model_dim % self.num_heads:
            raise ValueError(
                f"TransformerConfig: `num_heads`={self.num_heads} must divide "
                f"model_dim={self.model_dim}"
            )
        if self.norm not in NORMS:
            raise ValueError(
                f"TransformerConfig: `norm` must be one of {NORMS}, got {self.norm!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"TransformerConfig: `activation` must be one of {tuple(ACTIVATIONS)}, got "
                f"{self.activation!r}"
            )
        w = self.local_window_size
        pair = (w, w) if isinstance(w, int) else w
        if w is not None and not (
            isinstance(pair, tuple) and len(pair) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in pair)
        ):
            raise ValueError(
                "TransformerConfig: `local_window_size` must be None, an int >= 0 or a tuple "
                f"(left, right) of them, got {w!r}"
            )
        if self.attention_implementation not in (None, *ops.IMPLEMENTATIONS):
            raise ValueError(
                "TransformerConfig: `attention_implementation` must be None or one of "
                f"{ops.IMPLEMENTATIONS}, got {self.attention_implementation!r}"
            )

    @property
    def attention_position(self) -> str | None:
        """The scheme applied inside attention (RoPE/ALiBi), or None."""
        return self.position if self.position in ("rope", "alibi") else None

    def replace(self, **changes) -> TransformerConfig:
        return dataclasses.replace(self, **changes)


def make_norm(cfg: TransformerConfig, name: str) -> nn.Module:
    """The config's norm (``LayerNorm`` or ``RMSNorm``) with its epsilon, named ``name``."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, name=name)
    return nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype, name=name)


class PositionEmbedding(nn.Module):
    """Adds absolute positions (sinusoidal or learned) to ``x [B, L, D]``.

    In decode mode it keeps its own step counter in the ``'cache'`` collection, so a token
    fed alone at step ``t`` receives position ``t``. ``positions [B, L]`` (int) replaces
    ``0..L-1``, e.g. ``ops.segment_positions`` of packed documents.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, positions: Array | None = None) -> Array:
        cfg = self.config
        if cfg.position not in ("sinusoidal", "learned"):
            return x
        length, dim = x.shape[-2], x.shape[-1]
        if length > cfg.max_len:
            raise ValueError(
                f"PositionEmbedding: sequence length {length} exceeds max_len={cfg.max_len}"
            )
        if positions is not None:
            if cfg.decode:
                raise ValueError("PositionEmbedding: explicit `positions` in decode mode")
            if positions.shape != x.shape[:-1]:
                raise ValueError(
                    f"PositionEmbedding: `positions` must have shape {list(x.shape[:-1])}, "
                    f"got {list(positions.shape)}"
                )
        else:
            positions = jnp.arange(length)
        if cfg.decode:
            cached = self.has_variable("cache", "position_index")
            index = self.variable("cache", "position_index", lambda: jnp.array(0, jnp.int32))
            if cached:
                positions = index.value + positions
                index.value = index.value + length
        if cfg.position == "sinusoidal":
            table = ops.sinusoidal_encoding(dim=dim, positions=positions, dtype=x.dtype)
        else:
            embedding = self.param(
                "embedding", nn.initializers.normal(stddev=0.02), (cfg.max_len, dim)
            )
            table = jnp.take(embedding, positions, axis=0).astype(x.dtype)
        # [L, D] -> [1, .., L, D]: an explicit broadcast (runs under rank promotion "raise").
        return x + jnp.reshape(table, (1,) * (x.ndim - table.ndim) + table.shape)


class MlpBlock(nn.Module):
    """Position-wise feed-forward network ``wo act(wi x)``, or gated
    ``wo (act(wi_0 x) * wi_1 x)`` (``config.gated_mlp``; SwiGLU with ``"silu"``)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
        cfg = self.config
        activation = ACTIVATIONS[cfg.activation]
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, use_bias=cfg.use_bias, dtype=cfg.dtype, name=name)
        if cfg.gated_mlp:
            h = activation(dense(cfg.mlp_dim, "wi_0")(x)) * dense(cfg.mlp_dim, "wi_1")(x)
        else:
            h = activation(dense(cfg.mlp_dim, "wi")(x))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return dense(x.shape[-1], "wo")(h)


class _Residual(nn.Module):
    """``x + dropout(f(LN(x)))`` (pre-LN) or ``LN(x + dropout(f(x)))`` (post-LN)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, sublayer, *, deterministic: bool) -> Array:
        cfg = self.config
        norm = make_norm(cfg, "norm")
        h = sublayer(norm(x) if cfg.pre_ln else x)
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return x + h if cfg.pre_ln else norm(x + h)


def _attention(cfg: TransformerConfig, name: str, *, self_attention: bool) -> nn.Module:
    # Passed only when set, so an `attention_cls` without these fields still fits.
    optional = {
        "scale": cfg.attention_scale,
        "implementation": cfg.attention_implementation,
        "local_window_size": cfg.local_window_size if self_attention else None,
        "use_bias": None if cfg.use_bias else False,
        "sow_weights": True if cfg.sow_weights else None,
    }
    return (cfg.attention_cls or MultiHeadAttention)(
        num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads,
        dropout_rate=cfg.attention_dropout_rate,
        normalize_qk=cfg.normalize_qk,
        position=cfg.attention_position if self_attention else None,
        rope_base=cfg.rope_base,
        decode=cfg.decode and self_attention,
        dtype=cfg.dtype,
        name=name,
        **{k: v for k, v in optional.items() if v is not None},
    )


def _segments(query_ids: Array | None, kv_ids: Array | None = None) -> dict:
    """The segment-id keyword arguments of an attention call, empty without segments (so an
    ``attention_cls`` without them still fits)."""
    if query_ids is None:
        return {}
    return {"query_segment_ids": query_ids,
            "key_value_segment_ids": query_ids if kv_ids is None else kv_ids}


def _check_segments(name: str, segment_ids: Array | None, tokens: Array, decode: bool) -> None:
    if segment_ids is None:
        return
    if decode:
        raise ValueError(f"`{name}` (packed documents) is not supported in decode mode")
    if segment_ids.shape != tokens.shape or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(
            f"`{name}` must be integer document ids of the shape of the tokens "
            f"{list(tokens.shape)}, got shape {list(segment_ids.shape)} dtype "
            f"{segment_ids.dtype}"
        )


def _positions(segment_ids: Array | None) -> Array | None:
    """Absolute positions restarting in every packed document (None: ``0..L-1``)."""
    return None if segment_ids is None else ops.segment_positions(segment_ids)


class EncoderLayer(nn.Module):
    """Self-attention + MLP, each in a residual branch."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array | None = None, *,
                 segment_ids: Array | None = None, deterministic: bool = True):
        """x: ``[B, S, D]``; mask: bool broadcastable to ``[B, H, S, S]``; segment_ids:
        ``[B, S]`` int, attention within each packed document only."""
        cfg = self.config
        attention = _attention(cfg, "self_attention", self_attention=True)
        segments = _segments(segment_ids)
        x = _Residual(cfg, name="attention_block")(
            x, lambda h: attention(h, mask=mask, deterministic=deterministic, **segments),
            deterministic=deterministic,
        )
        if not cfg.mlp_dim:  # attention-only
            return x
        mlp = MlpBlock(cfg, name="mlp")
        return _Residual(cfg, name="mlp_block")(
            x, lambda h: mlp(h, deterministic=deterministic), deterministic=deterministic
        )


class DecoderLayer(nn.Module):
    """Causal self-attention, optional cross-attention to ``memory``, MLP."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        x: Array,
        memory: Array | None = None,
        *,
        self_mask: Array | None = None,
        cross_mask: Array | None = None,
        segment_ids: Array | None = None,
        memory_segment_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """x: ``[B, T, D]``; memory: ``[B, S, D]`` encoder output or None (decoder-only).

        self_mask / cross_mask: bool broadcastable to ``[B, H, T, T]`` / ``[B, H, T, S]``.
        segment_ids / memory_segment_ids: ``[B, T]`` / ``[B, S]`` int packed-document ids of
        the decoder and the memory (cross-attention needs both).
        """
        cfg = self.config
        self_attention = _attention(cfg, "self_attention", self_attention=True)
        self_segments = _segments(segment_ids)
        x = _Residual(cfg, name="self_attention_block")(
            x,
            lambda h: self_attention(
                h, mask=self_mask, is_causal=True, deterministic=deterministic, **self_segments
            ),
            deterministic=deterministic,
        )
        if memory is not None:
            if (segment_ids is None) != (memory_segment_ids is None):
                raise ValueError(
                    "DecoderLayer: cross-attention over packed documents needs both "
                    "`segment_ids` and `memory_segment_ids` (or neither)"
                )
            cross_attention = _attention(cfg, "cross_attention", self_attention=False)
            cross_segments = _segments(segment_ids, memory_segment_ids)
            x = _Residual(cfg, name="cross_attention_block")(
                x,
                lambda h: cross_attention(
                    h, memory, mask=cross_mask, deterministic=deterministic, **cross_segments
                ),
                deterministic=deterministic,
            )
        if not cfg.mlp_dim:  # attention-only
            return x
        mlp = MlpBlock(cfg, name="mlp")
        return _Residual(cfg, name="mlp_block")(
            x, lambda h: mlp(h, deterministic=deterministic), deterministic=deterministic
        )


def _check_tokens(name: str, tokens: Array) -> None:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"`{name}` must be integer token ids of shape [B, L], got shape "
            f"{list(tokens.shape)} dtype {tokens.dtype}"
        )


def _embed(cfg: TransformerConfig, vocab_size: int, name: str) -> nn.Embed:
    # Unit-variance embeddings, as flax's WMT example; tied logits are rescaled by 1/sqrt(D).
    return nn.Embed(
        vocab_size, cfg.model_dim, embedding_init=nn.initializers.normal(1.0), name=name
    )


class Encoder(nn.Module):
    """Token embedding + positions + ``num_layers`` encoder layers (+ final LN if pre-LN)."""

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        *,
        token_types: Array | None = None,
        segment_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """tokens: ``[B, S]`` ids (``pad_id`` is masked). Returns ``[B, S, D]``.

        token_types: ``[B, S]`` token-type ids (BERT's sentence A/B "segment" embeddings)
        when ``type_vocab_size > 0``; default all 0.
        segment_ids: ``[B, S]`` int packed-document ids (see the module docstring).
        """
        cfg = self.config
        _check_tokens("tokens", tokens)
        _check_segments("segment_ids", segment_ids, tokens, decode=False)
        if token_types is not None and cfg.type_vocab_size == 0:
            raise ValueError("Encoder: `token_types` given but config.type_vocab_size is 0")
        if token_types is not None and token_types.shape != tokens.shape:
            raise ValueError(
                f"Encoder: `token_types` must have the shape of `tokens` {list(tokens.shape)}, "
                f"got {list(token_types.shape)}"
            )
        x = _embed(cfg, cfg.vocab_size, "embed")(tokens)
        # Gradient hook (analysis.input_gradient_norms): a no-op unless a 'perturbations'
        # collection is passed or mutable. Not created at init, so `variables` from init
        # still apply to inputs of any shape.
        if not self.is_initializing():
            x = self.perturb("embeddings", x)
        x = PositionEmbedding(cfg.replace(decode=False), name="position")(
            x, _positions(segment_ids))
        if cfg.type_vocab_size:
            types = jnp.zeros_like(tokens) if token_types is None else token_types
            x = x + nn.Embed(cfg.type_vocab_size, cfg.model_dim, name="token_type")(types)
        if cfg.embedding_norm:
            x = make_norm(cfg, "embed_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        mask = ops.padding_mask_from_tokens(tokens, pad_id=cfg.pad_id)
        for i in range(cfg.num_layers):
            x = EncoderLayer(cfg.replace(decode=False), name=f"layer_{i}")(
                x, mask, segment_ids=segment_ids, deterministic=deterministic
            )
        if not cfg.pre_ln:
            return x
        return make_norm(cfg, "final_norm")(x)


class Decoder(nn.Module):
    """Token embedding + positions + decoder layers + output projection to logits.

    With ``cross_attention=False`` it is a decoder-only language model body.
    """

    config: TransformerConfig
    vocab_size: int
    num_layers: int
    cross_attention: bool = True

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        memory: Array | None = None,
        memory_valid: Array | None = None,
        *,
        segment_ids: Array | None = None,
        memory_segment_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Logits ``[B, T, V]`` for ``tokens [B, T]``.

        Args:
          tokens: decoder input ids (shifted right for teacher forcing).
          memory: ``[B, S, D]`` encoder output (cross-attention) or None.
          memory_valid: ``[B, S]`` bool, the real (non-pad) encoder positions.
          segment_ids: ``[B, T]`` int packed-document ids of ``tokens`` (module docstring).
          memory_segment_ids: ``[B, S]`` int document ids of ``memory`` (with cross-attention,
            given together with ``segment_ids``).
        """
        cfg = self.config
        _check_tokens("tokens", tokens)
        _check_segments("segment_ids", segment_ids, tokens, cfg.decode)
        if self.cross_attention and memory is None:
            raise ValueError("Decoder: `memory` [B, S, D] is required with cross_attention")
        embed = _embed(cfg, self.vocab_size, "embed")
        x = PositionEmbedding(cfg, name="position")(embed(tokens), _positions(segment_ids))
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        # Right padding never leaks into real positions under a causal mask, but masking pad
        # keys keeps left-padded prompts correct too. In decode mode the cache masks instead.
        self_mask = None
        if not cfg.decode:
            self_mask = ops.valid_from_tokens(tokens, cfg.pad_id)[:, None, None, :]
        cross_mask = None if memory_valid is None else memory_valid[:, None, None, :]
        for i in range(self.num_layers):
            x = DecoderLayer(cfg, name=f"layer_{i}")(
                x,
                memory if self.cross_attention else None,
                self_mask=self_mask,
                cross_mask=cross_mask,
                segment_ids=segment_ids,
                memory_segment_ids=memory_segment_ids if self.cross_attention else None,
                deterministic=deterministic,
            )
        if cfg.pre_ln:
            x = make_norm(cfg, "final_norm")(x)
        if cfg.tie_embeddings:
            logits = embed.attend(x)
            return logits / math.sqrt(cfg.model_dim) if cfg.scale_tied_logits else logits
        return nn.Dense(self.vocab_size, use_bias=cfg.use_bias, dtype=cfg.dtype, name="logits")(x)


class EncoderDecoder(nn.Module):
    """The original Transformer: encoder over the source, decoder with cross-attention."""

    config: TransformerConfig

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(
            cfg,
            vocab_size=cfg.target_vocab_size or cfg.vocab_size,
            num_layers=cfg.num_decoder_layers or cfg.num_layers,
        )

    def encode(self, source: Array, *, source_segment_ids: Array | None = None,
               deterministic: bool = True) -> Array:
        """source: ``[B, S]`` ids -> ``[B, S, D]``."""
        return self.encoder(source, segment_ids=source_segment_ids,
                            deterministic=deterministic)

    def decode(
        self,
        encoded: Array,
        source: Array,
        target_in: Array,
        *,
        source_segment_ids: Array | None = None,
        target_segment_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Logits ``[B, T, V]`` for decoder inputs ``target_in [B, T]`` given ``encoded``."""
        if (source_segment_ids is None) != (target_segment_ids is None):
            raise ValueError("EncoderDecoder: packed documents need both `source_segment_ids` "
                             "and `target_segment_ids` (or neither)")
        memory_valid = ops.valid_from_tokens(source, self.config.pad_id)
        return self.decoder(target_in, encoded, memory_valid, segment_ids=target_segment_ids,
                            memory_segment_ids=source_segment_ids, deterministic=deterministic)

    def __call__(
        self,
        source: Array,
        target_in: Array,
        *,
        source_segment_ids: Array | None = None,
        target_segment_ids: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        """source ``[B, S]``, target_in ``[B, T]`` -> logits ``[B, T, V]``.

        ``source_segment_ids [B, S]`` / ``target_segment_ids [B, T]``: packed documents
        (module docstring), given together: target document ``n`` reads source document
        ``n``."""
        encoded = self.encode(source, source_segment_ids=source_segment_ids,
                              deterministic=deterministic)
        return self.decode(encoded, source, target_in, source_segment_ids=source_segment_ids,
                           target_segment_ids=target_segment_ids, deterministic=deterministic)


class DecoderOnlyLM(nn.Module):
    """A GPT-style causal language model: ``tokens [B, T] -> logits [B, T, V]``.

    ``segment_ids [B, T]`` (int): packed documents (see the module docstring): each
    document's logits are those it gets alone."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array, *, segment_ids: Array | None = None,
                 deterministic: bool = True) -> Array:
        cfg = self.config
        return Decoder(
            cfg,
            vocab_size=cfg.vocab_size,
            num_layers=cfg.num_layers,
            cross_attention=False,
            name="decoder",
        )(tokens, segment_ids=segment_ids, deterministic=deterministic)
