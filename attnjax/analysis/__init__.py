"""Analysis of attention: alignment scoring, probes of where attention goes, how far
gradients reach back, what each head does (scores, ablation), attention rollout and flow,
attributions to compare attention with, and word-level attention and vectors from word
pieces (``words``)."""

from attnjax.analysis.alignment import (
    alignment_error_rate,
    argmax_links,
    corpus_aer,
    cross_attention_maps,
    diagonal_links,
    head_aers,
)
from attnjax.analysis.attribution import (
    embedding_function,
    gradient_x_input,
    kendall_tau,
    leave_one_out,
    spearman,
)
from attnjax.analysis.capture import capture_attention, layer_paths, stack_layers
from attnjax.analysis.flow import attention_flow, attention_rollout
from attnjax.analysis.heads import (
    ablate_heads,
    head_outputs,
    head_scores,
    mean_head_outputs,
    with_attention_weights,
)
from attnjax.analysis.probes import (
    antecedent_probe,
    input_gradient_norms,
    pronoun_attention,
    pronoun_probe,
)
from attnjax.analysis.words import (
    encode_words,
    piece_words,
    word_attention,
    word_vectors,
)

__all__ = [
    "ablate_heads",
    "alignment_error_rate",
    "attention_flow",
    "attention_rollout",
    "embedding_function",
    "gradient_x_input",
    "head_outputs",
    "head_scores",
    "kendall_tau",
    "leave_one_out",
    "mean_head_outputs",
    "spearman",
    "with_attention_weights",
    "antecedent_probe",
    "cross_attention_maps",
    "pronoun_attention",
    "pronoun_probe",
    "argmax_links",
    "capture_attention",
    "corpus_aer",
    "diagonal_links",
    "head_aers",
    "input_gradient_norms",
    "layer_paths",
    "stack_layers",
    "encode_words",
    "piece_words",
    "word_attention",
    "word_vectors",
]
