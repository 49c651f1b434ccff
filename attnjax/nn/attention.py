"""Multi-head attention as a thin Flax module over ``attnjax.ops.dot_product_attention``.

Attention weights are sown (``self.sow('intermediates', 'attention_weights', w)``, ``[B, H, T,
S]``) only when asked, because forming them needs the ``[T, S]`` matrix of the ``"xla"``
implementation (O(T S) memory) whatever kernel the module runs otherwise. Three ways to ask,
any one suffices:

* ``MultiHeadAttention(..., sow_weights=True)`` (``TransformerConfig(sow_weights=True)`` for a
  whole model), for a model built to be inspected;
* ``module(..., sow_weights=True)`` per call, as ``flax.linen.MultiHeadDotProductAttention``;
* ``with attnjax.nn.sow_attention_weights(): model.apply(..., mutable=['intermediates'])``
  for any model, unedited: what ``attnjax.analysis.capture_attention`` does. The switch is a
  context variable read when the module is traced, so enter it inside the function you
  ``jax.jit`` (or around an eager ``apply``), not around a call of an already compiled one.

The weights are stored only where ``'intermediates'`` is mutable; with sowing off, making it
mutable changes nothing (no weights, the same kernel).
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax import ops

Array = jax.Array
POSITIONS_IN_ATTENTION = (None, "rope", "alibi")
# Implementations without `score_fn`: ALiBi goes in as a dense [H, T, S] bias there.
_NO_SCORE_FN = ("flash", "cudnn")

_SOW_ATTENTION_WEIGHTS = contextvars.ContextVar("attnjax_sow_attention_weights", default=False)


@contextlib.contextmanager
def sow_attention_weights(enabled: bool = True) -> Iterator[None]:
    """Within this context every ``MultiHeadAttention`` traced sows its attention weights
    (as with ``sow_weights=True``), so that analysis code can capture them from a model it
    did not build. ``enabled=False`` turns a surrounding context off.

    Read at trace time: enter it inside the jitted function (see the module docstring)."""
    token = _SOW_ATTENTION_WEIGHTS.set(bool(enabled))
    try:
        yield
    finally:
        _SOW_ATTENTION_WEIGHTS.reset(token)


def _shifted(fn: Callable | None, offset, *, score: bool) -> Callable | None:
    """``mask_fn``/``score_fn`` seeing absolute query positions ``q + offset`` (decoding with
    a cache: the call's queries start at the cache index)."""
    if fn is None:
        return None
    if score:
        return lambda s, b, h, q, k: fn(s, b, h, q + offset, k)
    return lambda b, h, q, k: fn(b, h, q + offset, k)


def _then(first: Callable, second: Callable | None) -> Callable:
    """``score_fn`` applying ``first`` then ``second`` (None: only ``first``)."""
    if second is None:
        return first
    return lambda s, b, h, q, k: second(first(s, b, h, q, k), b, h, q, k)


class MultiHeadAttention(nn.Module):
    """Multi-head (and grouped-/multi-query) attention (Vaswani et al. 2017, sec. 3.2.2).

    Parameters are laid out like ``flax.linen.MultiHeadDotProductAttention`` (``query``,
    ``key``, ``value``: kernel ``[F, H, D]``; ``out``: kernel ``[H, D, F_out]``; with
    ``normalize_qk`` also ``query_ln``/``key_ln`` scales ``[D]``), so weights move between the
    two unchanged; so does the call (``inputs_q, inputs_k, inputs_v``, ``deterministic``,
    ``dropout_rng``, ``sow_weights``). The structured arguments of
    ``ops.dot_product_attention`` (local window, lengths, segment ids, prefix, ``mask_fn``,
    ``score_fn``) pass through, so the ``"chunked"`` implementation runs them without any
    ``[T, S]`` array.

    Attributes:
      num_heads: H, the number of query heads.
      qkv_features: total q/k/v width ``H * D``; default: the feature dim of ``inputs_q``.
      out_features: output width; default: the feature dim of ``inputs_q``.
      num_kv_heads: Hk key/value heads (must divide H); default H. 1 = multi-query attention.
      dropout_rate: dropout on the attention weights.
      deterministic: disable dropout; as flax, give it here or per call (not both). Needed
        only when ``dropout_rate > 0``, where leaving it unset raises instead of silently
        running without dropout.
      use_bias: biases in the q/k/v/out projections.
      normalize_qk: LayerNorm on q and k per head before the dot product (Dehghani et al.
        2023, ViT-22B), as flax's ``normalize_qk`` (scale in ``param_dtype``).
      position: ``None``, ``"rope"`` (rotary q/k) or ``"alibi"`` (linear distance penalty,
        ``ops.alibi_score_fn``: applied as a ``score_fn``, or as a dense bias for the
        implementations without one, ``"flash"`` and ``"cudnn"``). Applied in self-attention
        only (no ``inputs_k``/``inputs_v``).
      rope_base: RoPE frequency base.
      local_window_size: ``None``, an int ``w`` or ``(left, right)``: query ``i`` sees keys
        ``i - left <= j <= i + right`` (``ops.dot_product_attention``'s, as jax.nn); with
        ``is_causal`` and ``(w, 0)``, sliding-window attention (Beltagy et al. 2020).
      decode: autoregressive decoding with a key/value cache. Initialise with inputs of the
        full length ``[B, L, F]`` to size the cache; then each call appends its ``T >= 1`` new
        positions (with ``mutable=['cache']``) and attends causally to everything cached.
        ``mask_fn``/``score_fn`` and the window then see absolute positions.
      implementation: passed to ``ops.dot_product_attention`` (``"xla" | "chunked" |
        "flash" | "cudnn" | None``); sowing the weights runs ``"xla"``.
      scale: the logit scale passed to ``ops.dot_product_attention``; None (the default)
        is 1/sqrt(D) (Vaswani et al. 2017), 1.0 the unscaled dot product.
      sow_weights: sow the attention weights ``[..., H, T, S]`` into ``'intermediates'``
        (``attention_weights``) on every call (see the module docstring).
      dtype: computation dtype (default: that of the inputs); param_dtype: parameter dtype.
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    num_kv_heads: int | None = None
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    use_bias: bool = True
    normalize_qk: bool = False
    position: str | None = None
    rope_base: float = 10_000.0
    local_window_size: int | tuple[int, int] | None = None
    decode: bool = False
    implementation: str | None = None
    scale: float | None = None
    sow_weights: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    def _dims(self, inputs_q: Array) -> tuple[int, int, int]:
        features = self.qkv_features or inputs_q.shape[-1]
        num_kv_heads = self.num_kv_heads or self.num_heads
        if self.num_heads <= 0 or features % self.num_heads:
            raise ValueError(
                f"MultiHeadAttention: `num_heads`={self.num_heads} must divide qkv_features="
                f"{features} (inputs_q shape {list(inputs_q.shape)})"
            )
        if self.num_heads % num_kv_heads:
            raise ValueError(
                f"MultiHeadAttention: `num_kv_heads`={num_kv_heads} must divide "
                f"num_heads={self.num_heads}"
            )
        if self.position not in POSITIONS_IN_ATTENTION:
            raise ValueError(
                f"MultiHeadAttention: `position` must be one of {POSITIONS_IN_ATTENTION}, "
                f"got {self.position!r}"
            )
        return features // self.num_heads, self.num_heads, num_kv_heads

    def _deterministic(self, deterministic: bool | None) -> bool:
        """``nn.merge_param`` of the attribute and the call argument, needed only with
        dropout (as flax)."""
        if self.dropout_rate == 0.0:
            return True
        if self.deterministic is not None and deterministic is not None:
            raise ValueError(
                "MultiHeadAttention: `deterministic` was given both as the module attribute "
                f"({self.deterministic}) and at call time ({deterministic}); give it once"
            )
        merged = self.deterministic if deterministic is None else deterministic
        if merged is None:
            raise ValueError(
                f"MultiHeadAttention: dropout_rate={self.dropout_rate} > 0 needs "
                "`deterministic`: pass deterministic=True (evaluation: no dropout) or "
                "deterministic=False (training: dropout, with rngs={'dropout': key} or "
                "dropout_rng=key), as the module attribute or at call time"
            )
        return bool(merged)

    @staticmethod
    def _inputs(inputs_q, inputs_k, inputs_v, inputs_kv) -> tuple[Array, Array, bool]:
        """``(inputs_k, inputs_v, self_attention)`` resolved as flax does."""
        if inputs_kv is not None:
            if inputs_k is not None or inputs_v is not None:
                raise ValueError(
                    "MultiHeadAttention: `inputs_kv` cannot be combined with `inputs_k` / "
                    "`inputs_v`; pass inputs_k (and inputs_v, default inputs_k) instead: "
                    "inputs_kv is deprecated, as in flax.linen.MultiHeadDotProductAttention"
                )
            warnings.warn(
                "MultiHeadAttention: `inputs_kv` is deprecated (as in flax); pass inputs_k "
                "(and inputs_v, which defaults to inputs_k) instead",
                DeprecationWarning, stacklevel=3,
            )
            inputs_k = inputs_kv
        elif inputs_k is None and inputs_v is not None:
            raise ValueError(
                "MultiHeadAttention: `inputs_k` cannot be None when `inputs_v` is given; for "
                "keys and values from one array pass it as inputs_k and leave inputs_v None"
            )
        self_attention = inputs_k is None
        inputs_k = inputs_q if inputs_k is None else inputs_k
        inputs_v = inputs_k if inputs_v is None else inputs_v
        for name, x in (("inputs_k", inputs_k), ("inputs_v", inputs_v)):
            if x.ndim != inputs_q.ndim or x.shape[:-2] != inputs_q.shape[:-2]:
                raise ValueError(
                    f"MultiHeadAttention: `{name}` must have shape [..., S, F_kv] with the "
                    f"batch dims of inputs_q {list(inputs_q.shape)}, got {list(x.shape)}"
                )
        if inputs_v.shape[-2] != inputs_k.shape[-2]:
            raise ValueError(
                "MultiHeadAttention: `inputs_v` must have the length S of `inputs_k` "
                f"{list(inputs_k.shape)}, got {list(inputs_v.shape)}"
            )
        return inputs_k, inputs_v, self_attention

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_k: Array | None = None,
        inputs_v: Array | None = None,
        *,
        inputs_kv: Array | None = None,
        mask: Array | None = None,
        bias: Array | None = None,
        is_causal: bool | str = False,
        query_segment_ids: Array | None = None,
        key_value_segment_ids: Array | None = None,
        query_seq_lengths: Array | None = None,
        key_value_seq_lengths: Array | None = None,
        prefix_lengths: Array | None = None,
        mask_fn: Callable | None = None,
        score_fn: Callable | None = None,
        deterministic: bool | None = None,
        dropout_rng: Array | None = None,
        sow_weights: bool = False,
    ) -> Array:
        """Attend from ``inputs_q`` to ``inputs_k``/``inputs_v`` (self-attention when both
        are None; ``inputs_v`` defaults to ``inputs_k``).

        Args:
          inputs_q: ``[..., T, F]``.
          inputs_k: ``[..., S, F_kv]`` keys' inputs, or None for self-attention.
          inputs_v: ``[..., S, F_kv]`` values' inputs; default ``inputs_k``.
          inputs_kv: deprecated (as in flax): ``inputs_k = inputs_v = inputs_kv``.
          mask: bool broadcastable to ``[..., H, T, S]``, True = attend.
          bias: float broadcastable to ``[..., H, T, S]``, added to the logits.
          is_causal: causal attention: ``True``/``"top_left"`` or ``"bottom_right"``
            (implied, and handled by the cache, in decode).
          query_segment_ids, key_value_segment_ids: ``[..., T]`` / ``[..., S]`` int, packed
            documents: query ``i`` sees key ``j`` only if their ids are equal (the second
            defaults to the first in self-attention).
          query_seq_lengths, key_value_seq_lengths: ``[...]`` int, the real (right-padded)
            lengths, as jax.nn.
          prefix_lengths: ``[...]`` int, with ``is_causal``: a bidirectional prefix (prefix LM).
          mask_fn: ``(batch, head, q_index, kv_index) -> bool``; score_fn: ``(score, batch,
            head, q_index, kv_index) -> score`` (``ops.structure``), applied after ALiBi.
          deterministic: disable dropout (see the attribute).
          dropout_rng: key for the attention dropout; default ``self.make_rng('dropout')``.
          sow_weights: sow the weights of this call (see the module docstring).

        In decode mode with a cache, segment ids, ``query_seq_lengths`` and
        ``prefix_lengths`` are not supported (the cached keys carry none).

        Returns:
          ``[..., T, out_features]``.
        """
        if inputs_q.ndim < 2:
            raise ValueError(
                f"MultiHeadAttention: `inputs_q` must have shape [..., T, F], got "
                f"{list(inputs_q.shape)}"
            )
        inputs_k, inputs_v, self_attention = self._inputs(inputs_q, inputs_k, inputs_v, inputs_kv)
        head_dim, num_heads, num_kv_heads = self._dims(inputs_q)
        dense = lambda heads, name: nn.DenseGeneral(  # noqa: E731
            features=(heads, head_dim),
            axis=-1,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            name=name,
        )
        query = dense(num_heads, "query")(inputs_q)  # [..., T, H, D]
        key = dense(num_kv_heads, "key")(inputs_k)  # [..., S, Hk, D]
        value = dense(num_kv_heads, "value")(inputs_v)  # [..., S, Hk, D]
        if self.normalize_qk:
            norm = lambda name: nn.LayerNorm(  # noqa: E731
                name=name, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
            query, key = norm("query_ln")(query), norm("key_ln")(key)

        length_q, length_kv = query.shape[-3], key.shape[-3]
        query_positions = jnp.arange(length_q)
        kv_positions = jnp.arange(length_kv)
        query_offset = 0  # the absolute position of the first query (the cache index)
        window = self.local_window_size
        cached = False  # True once the cache exists, i.e. on every call after `init`
        if self.decode:
            if not self_attention:
                raise ValueError("MultiHeadAttention: decode=True supports self-attention only")
            cached = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
            cached_value = self.variable(
                "cache", "cached_value", jnp.zeros, value.shape, value.dtype
            )
            cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            if cached:
                for name, x in (("query_segment_ids", query_segment_ids),
                                ("key_value_segment_ids", key_value_segment_ids),
                                ("query_seq_lengths", query_seq_lengths),
                                ("prefix_lengths", prefix_lengths)):
                    if x is not None:
                        raise ValueError(f"MultiHeadAttention: `{name}` is not supported when "
                                         "decoding with a cache (decode=True)")
                # The index is dynamic, so writing past the cache length cannot be caught at
                # trace time: callers must size the cache (the init input) for the longest run.
                index = cache_index.value
                query_offset = index
                query_positions = index + jnp.arange(length_q)
                kv_positions = jnp.arange(cached_key.value.shape[-3])
                if self.position == "rope":
                    query = ops.apply_rope(query, query_positions, base=self.rope_base)
                    key = ops.apply_rope(key, query_positions, base=self.rope_base)
                axis = key.ndim - 3
                key = jax.lax.dynamic_update_slice_in_dim(cached_key.value, key, index, axis)
                value = jax.lax.dynamic_update_slice_in_dim(
                    cached_value.value, value, index, axis
                )
                cached_key.value, cached_value.value = key, value
                cache_index.value = index + length_q
                # Query t (at absolute position index + t) sees cached positions <= its own,
                # and within the window of its absolute position.
                visible = kv_positions[None, :] <= query_positions[:, None]  # [T, L]
                if window is not None:
                    visible = ops.combine_masks(visible, ops.local_window_mask(
                        length_q, key.shape[-3], window=window, offset=index))
                    window = None
                mask = ops.combine_masks(mask, visible)  # explicit ranks, no rank promotion
                is_causal = False
                mask_fn = _shifted(mask_fn, index, score=False)
                score_fn = _shifted(score_fn, index, score=True)
        if self_attention and self.position == "rope" and not cached:
            query = ops.apply_rope(query, query_positions, base=self.rope_base)
            key = ops.apply_rope(key, kv_positions, base=self.rope_base)

        deterministic = self._deterministic(deterministic)
        dropout_rate = 0.0 if deterministic else self.dropout_rate
        if dropout_rate > 0.0 and dropout_rng is None:
            dropout_rng = self.make_rng("dropout")
        record = (self.sow_weights or sow_weights or _SOW_ATTENTION_WEIGHTS.get()) and \
            self.is_mutable_collection("intermediates")
        # The weights are the [T, S] matrix only "xla" forms: asked for, they choose it.
        implementation = "xla" if record else self.implementation
        if self_attention and self.position == "alibi":
            if implementation in _NO_SCORE_FN:
                alibi = ops.alibi_bias(num_heads, length_q, key.shape[-3],
                                       query_positions=query_positions,
                                       kv_positions=kv_positions)
                if bias is not None:  # [H, T, S] and [..., H, T, S]: one rank, explicitly
                    rank = max(bias.ndim, alibi.ndim)
                    bias = jnp.reshape(bias, (1,) * (rank - bias.ndim) + bias.shape)
                    alibi = jnp.reshape(alibi, (1,) * (rank - alibi.ndim) + alibi.shape)
                bias = alibi if bias is None else bias + alibi
            else:
                score_fn = _then(ops.alibi_score_fn(num_heads, query_offset=query_offset),
                                 score_fn)
        result = ops.dot_product_attention(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            is_causal=is_causal,
            dropout_rate=dropout_rate,
            dropout_rng=dropout_rng,
            implementation=implementation,
            scale=self.scale,
            return_weights=record,
            query_seq_lengths=query_seq_lengths,
            key_value_seq_lengths=key_value_seq_lengths,
            local_window_size=window,
            query_segment_ids=query_segment_ids,
            key_value_segment_ids=key_value_segment_ids,
            prefix_lengths=prefix_lengths,
            mask_fn=mask_fn,
            score_fn=score_fn,
        )
        if record:
            result, weights = result
            self.sow("intermediates", "attention_weights", weights)
        return nn.DenseGeneral(
            features=self.out_features or inputs_q.shape[-1],
            axis=(-2, -1),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            name="out",
        )(result)
