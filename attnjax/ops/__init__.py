"""Pure JAX attention functions (no Flax). Layout: ``[batch..., length, heads, head_dim]``."""

from attnjax.ops.additive import additive_attention, additive_scores
from attnjax.ops.attention import (
    IMPLEMENTATIONS,
    choose_implementation,
    dot_product_attention,
    dot_product_attention_weights,
    masked_softmax,
)
from attnjax.ops.chunked import chunked_attention, default_blocks
from attnjax.ops.masks import (
    causal_mask,
    combine_masks,
    local_window_mask,
    make_attention_mask,
    padding_mask_from_lengths,
    padding_mask_from_tokens,
    valid_from_lengths,
    valid_from_tokens,
)
from attnjax.ops.positional import (
    alibi_bias,
    alibi_score_fn,
    alibi_slopes,
    apply_rope,
    rope_frequencies,
    segment_positions,
    sinusoidal_encoding,
)
from attnjax.ops.ring import ring_attention, ring_attention_shard

__all__ = [
    "IMPLEMENTATIONS",
    "additive_attention",
    "additive_scores",
    "alibi_bias",
    "alibi_score_fn",
    "alibi_slopes",
    "apply_rope",
    "causal_mask",
    "choose_implementation",
    "chunked_attention",
    "combine_masks",
    "dot_product_attention",
    "dot_product_attention_weights",
    "default_blocks",
    "local_window_mask",
    "make_attention_mask",
    "masked_softmax",
    "ring_attention",
    "ring_attention_shard",
    "padding_mask_from_lengths",
    "padding_mask_from_tokens",
    "rope_frequencies",
    "segment_positions",
    "sinusoidal_encoding",
    "valid_from_lengths",
    "valid_from_tokens",
]
