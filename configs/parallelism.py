"""Config of experiments/parallelism.py: T sequential RNN steps vs one attention sweep.

Variants (``configs/parallelism.py:VARIANT``):
  full (default)  lengths 16 ... 2048, one layer of width 128, batch 8, 5 alternating rounds.
  tour            lengths 16 ... 512, 3 rounds of >= 0.03 s (about 20 s on a 2-core CPU).
  smoke           two short lengths, for the tests.

A benchmark: no seeds (``seeds = ()``); intervals come from bootstrapping the timed rounds.
The pre-registered rule is ``experiments.parallelism.RULE`` with ``verdict.*`` filled in.
"""

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/parallelism.py", arg, VARIANTS)
    c = common.base(variant)
    c.seeds = ()  # a benchmark: the rounds are the repeats, not seeds
    c.seed = 0  # the inputs and parameters of the timed layers
    c.cell = "gru"  # gru | lstm | simple
    c.width = 128  # D: RNN hidden size = attention model width
    c.num_heads = 4
    c.batch_size = 8
    # 2048 keeps the [B, H, T, T] scores of the backward pass (several copies) near 2 GB.
    c.lengths = (16, 32, 64, 128, 256, 512, 1024, 2048)
    c.repeats = 5  # alternating rounds per length (RNN, attention, RNN, ...)
    c.min_seconds = 0.05  # each round repeats the call for at least this long
    # The rule (experiments.parallelism.RULE): (a) attention is faster at every T up to
    # short_length, counted per length with verdict.holds_at / fails_at; (b) the RNN's time
    # grows with its T steps: log-log slope >= min_rnn_exponent.
    c.short_length = 512
    c.verdict.min_rnn_exponent = 0.7
    # Part (a) is "faster at every T up to short_length": all lengths for "holds", none
    # for "does not hold" (the rule before Step 8 asked for all).
    c.verdict.holds_at = 1.0
    c.verdict.fails_at = 0.0
    if variant == "tour":
        c.lengths = (16, 32, 64, 128, 256, 512)  # up to short_length: what the rule reads
        c.repeats = 3
        c.min_seconds = 0.03
    elif variant == "smoke":
        c.lengths = (8, 32)
        c.width = 16
        c.num_heads = 2
        c.batch_size = 2
        c.repeats = 2
        c.min_seconds = 0.0
        c.short_length = 16
    return c
