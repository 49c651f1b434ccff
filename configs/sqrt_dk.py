"""Config of experiments/sqrt_dk.py: why softmax(q k^T / sqrt(d_k)) divides by sqrt(d_k).

Variants (``configs/sqrt_dk.py:VARIANT``):
  tour (default): five head dims from 4 to 1024, eight seeds; a few seconds on a CPU.
  smoke: three head dims, two seeds and small shapes, for the tests.
"""

import ml_collections

VARIANTS = ("tour", "smoke")


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(f"configs/sqrt_dk.py: unknown variant {arg!r}; choose from {VARIANTS}")

    config = ml_collections.ConfigDict()
    config.seed = 0
    # Independent draws of (queries, keys, values, loss direction) per head dim; the
    # statistics are averaged over them and their spread is reported.
    config.num_seeds = 8
    config.head_dims = (4, 16, 64, 256, 1024)  # the d_k sweep

    # q, k, v ~ N(0, 1) entrywise: the unit-variance assumption of Vaswani et al. 2017,
    # footnote 4, under which q.k has variance d_k.
    config.batch_size = 4
    config.num_heads = 4
    config.query_length = 64
    config.key_length = 64  # S: the entropy is normalised by log S
    config.value_dim = 64  # fixed across the sweep, so only d_k changes

    # The verdict is read at the largest head dim of the sweep.
    config.thresholds = ml_collections.ConfigDict()
    # "Saturated": the mean largest attention weight is at least this (near one-hot rows).
    config.thresholds.saturated_max_weight = 0.9
    # "Vanishes": the unscaled gradient norm is at most this fraction of the scaled one
    # (an order of magnitude), for the median query and for the whole batch.
    config.thresholds.vanishing_grad_ratio = 0.1

    if variant == "smoke":
        config.num_seeds = 2
        config.head_dims = (4, 64, 1024)
        config.batch_size = 4
        config.num_heads = 2
        config.query_length = 16
        config.key_length = 32
        config.value_dim = 16
    return config
