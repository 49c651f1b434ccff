"""Analysis of attention: alignment scoring (probes, ablation, rollout come later)."""

from attnjax.analysis.alignment import (
    alignment_error_rate,
    argmax_links,
    corpus_aer,
    diagonal_links,
    head_aers,
)
from attnjax.analysis.capture import capture_attention, stack_layers

__all__ = [
    "alignment_error_rate",
    "argmax_links",
    "capture_attention",
    "corpus_aer",
    "diagonal_links",
    "head_aers",
    "stack_layers",
]
