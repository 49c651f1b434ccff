"""Config of experiments/parallelism.py: T sequential RNN steps vs one attention sweep.

Variants (``configs/parallelism.py:VARIANT``):
  tour (default)  lengths 16 ... 2048, one layer of width 128, batch 8.
  smoke           two short lengths, for the tests.
"""

import ml_collections

VARIANTS = ("tour", "smoke")


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(f"configs/parallelism.py: unknown variant {arg!r}; choose from {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.cell = "gru"  # gru | lstm | simple
    c.width = 128  # D: RNN hidden size = attention model width
    c.num_heads = 4
    c.batch_size = 8
    # 2048 keeps the [B, H, T, T] scores of the backward pass (several copies) near 2 GB.
    c.lengths = (16, 32, 64, 128, 256, 512, 1024, 2048)
    c.repeats = 5  # alternating rounds per length; the median is reported
    c.min_seconds = 0.05  # each round repeats the call for at least this long
    c.short_length = 512  # the verdict: is attention faster at every T up to this?
    if variant == "smoke":
        c.lengths = (8, 32)
        c.width = 16
        c.num_heads = 2
        c.batch_size = 2
        c.repeats = 2
        c.min_seconds = 0.0
        c.short_length = 16
    return c
