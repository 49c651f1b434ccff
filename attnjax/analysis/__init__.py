"""Analysis of attention: alignment scoring, probes of where attention goes, and how far
gradients reach back."""

from attnjax.analysis.alignment import (
    alignment_error_rate,
    argmax_links,
    corpus_aer,
    diagonal_links,
    head_aers,
)
from attnjax.analysis.capture import capture_attention, layer_paths, stack_layers
from attnjax.analysis.probes import antecedent_probe, input_gradient_norms

__all__ = [
    "alignment_error_rate",
    "antecedent_probe",
    "argmax_links",
    "capture_attention",
    "corpus_aer",
    "diagonal_links",
    "head_aers",
    "input_gradient_norms",
    "layer_paths",
    "stack_layers",
]
