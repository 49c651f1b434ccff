"""Multi-head attention as a thin Flax module over ``attnjax.ops.dot_product_attention``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax import ops

Array = jax.Array
POSITIONS_IN_ATTENTION = (None, "rope", "alibi")


class MultiHeadAttention(nn.Module):
    """Multi-head (and grouped-/multi-query) attention (Vaswani et al. 2017, sec. 3.2.2).

    Parameters are laid out like ``flax.linen.MultiHeadDotProductAttention`` (``query``,
    ``key``, ``value``: kernel ``[F, H, D]``; ``out``: kernel ``[H, D, F_out]``), so weights
    move between the two unchanged. The attention weights ``[B, H, T, S]`` are sown into the
    ``'intermediates'`` collection as ``attention_weights`` when that collection is mutable.

    Attributes:
      num_heads: H, the number of query heads.
      qkv_features: total q/k/v width ``H * D``; default: the feature dim of ``inputs_q``.
      out_features: output width; default: the feature dim of ``inputs_q``.
      num_kv_heads: Hk key/value heads (must divide H); default H. 1 = multi-query attention.
      dropout_rate: dropout on the attention weights.
      use_bias: biases in the q/k/v/out projections.
      normalize_qk: LayerNorm on q and k per head before the dot product (Dehghani et al.
        2023, ViT-22B), as flax's ``normalize_qk``.
      position: ``None``, ``"rope"`` (rotary q/k) or ``"alibi"`` (linear distance bias). Applied
        in self-attention only (``inputs_kv is None``).
      rope_base: RoPE frequency base.
      decode: autoregressive decoding with a key/value cache. Initialise with inputs of the
        full length ``[B, L, F]`` to size the cache; then each call appends its ``T >= 1`` new
        positions (with ``mutable=['cache']``) and attends causally to everything cached.
      implementation: passed to ``ops.dot_product_attention``.
      scale: the logit scale passed to ``ops.dot_product_attention``; None (the default)
        is 1/sqrt(D) (Vaswani et al. 2017), 1.0 the unscaled dot product.
      dtype: computation dtype (default: that of the inputs); param_dtype: parameter dtype.
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    num_kv_heads: int | None = None
    dropout_rate: float = 0.0
    use_bias: bool = True
    normalize_qk: bool = False
    position: str | None = None
    rope_base: float = 10_000.0
    decode: bool = False
    implementation: str | None = None
    scale: float | None = None
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

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array | None = None,
        *,
        mask: Array | None = None,
        bias: Array | None = None,
        is_causal: bool = False,
        deterministic: bool = True,
    ) -> Array:
        """Attend from ``inputs_q`` to ``inputs_kv`` (self-attention when it is None).

        Args:
          inputs_q: ``[..., T, F]``.
          inputs_kv: ``[..., S, F_kv]``, or None for self-attention.
          mask: bool broadcastable to ``[..., H, T, S]``, True = attend.
          bias: float broadcastable to ``[..., H, T, S]``, added to the logits.
          is_causal: causal self-attention (implied, and handled by the cache, in decode).
          deterministic: disable dropout.

        Returns:
          ``[..., T, out_features]``.
        """
        if inputs_q.ndim < 2:
            raise ValueError(
                f"MultiHeadAttention: `inputs_q` must have shape [..., T, F], got "
                f"{list(inputs_q.shape)}"
            )
        self_attention = inputs_kv is None
        inputs_kv = inputs_q if self_attention else inputs_kv
        if inputs_kv.ndim != inputs_q.ndim or inputs_kv.shape[:-2] != inputs_q.shape[:-2]:
            raise ValueError(
                "MultiHeadAttention: `inputs_kv` must have shape [..., S, F_kv] with the batch "
                f"dims of inputs_q {list(inputs_q.shape)}, got {list(inputs_kv.shape)}"
            )
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
        key = dense(num_kv_heads, "key")(inputs_kv)  # [..., S, Hk, D]
        value = dense(num_kv_heads, "value")(inputs_kv)  # [..., S, Hk, D]
        if self.normalize_qk:
            query = nn.LayerNorm(name="query_ln", use_bias=False, dtype=self.dtype)(query)
            key = nn.LayerNorm(name="key_ln", use_bias=False, dtype=self.dtype)(key)

        length_q, length_kv = query.shape[-3], key.shape[-3]
        query_positions = jnp.arange(length_q)
        kv_positions = jnp.arange(length_kv)
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
                # The index is dynamic, so writing past the cache length cannot be caught at
                # trace time: callers must size the cache (the init input) for the longest run.
                index = cache_index.value
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
                # Query t (at absolute position index + t) sees cached positions <= its own.
                visible = kv_positions[None, :] <= query_positions[:, None]  # [T, L]
                mask = ops.combine_masks(mask, visible)  # explicit ranks, no rank promotion
                is_causal = False
        if self_attention and self.position == "rope" and not cached:
            query = ops.apply_rope(query, query_positions, base=self.rope_base)
            key = ops.apply_rope(key, kv_positions, base=self.rope_base)
        if self_attention and self.position == "alibi":
            alibi = ops.alibi_bias(
                num_heads,
                length_q,
                key.shape[-3],
                query_positions=query_positions,
                kv_positions=kv_positions,
            )
            if bias is not None:  # [H, T, S] and [..., H, T, S]: one rank, explicitly
                rank = max(bias.ndim, alibi.ndim)
                bias = jnp.reshape(bias, (1,) * (rank - bias.ndim) + bias.shape)
                alibi = jnp.reshape(alibi, (1,) * (rank - alibi.ndim) + alibi.shape)
            bias = alibi if bias is None else bias + alibi

        dropout_rng = None
        dropout_rate = 0.0 if deterministic else self.dropout_rate
        if dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        record = self.is_mutable_collection("intermediates")
        result = ops.dot_product_attention(
            query,
            key,
            value,
            bias=bias,
            mask=mask,
            is_causal=is_causal,
            dropout_rate=dropout_rate,
            dropout_rng=dropout_rng,
            implementation=self.implementation,
            scale=self.scale,
            return_weights=record,
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

