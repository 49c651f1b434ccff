"""Config of experiments/scaling.py: attention's time and memory vs sequence length.

Variants (``configs/scaling.py:VARIANT``):
  full (default)  N = 256 ... 16384 for every implementation, 32768 for chunked, and one
                  forward-only N = 131072 row of chunked with H = 1. About 35 minutes on a
                  2-core CPU: run it on an otherwise idle machine. Longer rows:
                  --config.long_lengths="(32768, 65536)" (65536 fwd+bwd: ~2 min a call).
  tour            N = 512, 1024, 2048 for naive, jax.nn, flax and attnjax chunked/default,
                  exponents fitted over all three lengths; about 2 minutes.
  smoke           N = 64, 128, two implementations, for the tests; seconds.

A benchmark: no seeds (``seeds = ()``); each row keeps its timed rounds and the intervals
resample them. The pre-registered rule is ``experiments.scaling.RULE`` filled in with
``quadratic_exponent_range``, ``fit_min_length`` and ``verdict.*``.
"""

from configs import common

VARIANTS = ("full", "tour", "smoke")

# Every implementation the experiment knows; "xla" (jax.nn.dot_product_attention) is the
# peer that all speed ratios are taken against, so keep it in `impls`.
IMPLS = ("naive", "xla", "flax", "attnjax_xla", "attnjax_chunked", "attnjax_default", "torch")


def get_config(arg=None):
    variant = common.check_variant("configs/scaling.py", arg, VARIANTS)
    c = common.base(variant)
    c.seeds = ()  # a benchmark: the timed rounds are the repeats
    c.seed = 0  # the random q, k, v
    c.batch_size = 1  # B
    c.num_heads = 8  # H
    c.head_dim = 64  # D; inputs are float32 [B, N, H, D]
    c.impls = IMPLS
    c.modes = ("fwd", "fwd+bwd")  # fwd+bwd: grads of sum(out * cotangent) w.r.t. q, k, v
    c.causal = (False, True)
    c.lengths = (256, 512, 1024, 2048, 4096, 8192, 16384)  # every implementation
    # Longer sequences, only for the implementations that need not hold [B, H, N, N].
    c.long_lengths = (32768,)
    # attnjax_default runs the chunked code at these lengths on the CPU: not measured twice.
    c.long_impls = ("attnjax_chunked",)
    c.long_forward_length = 131072  # one forward-only row of the long impls; 0 = none
    c.long_forward_heads = 1

    # Timing. A row is one (implementation, N, mode, causal): compile (timed apart), one
    # warm-up call, one call for peak memory, then rounds of calls; each round repeats the
    # call for at least `min_seconds`, and rounds go on until there are `repeats` of them
    # and they took at least `min_row_seconds` (so the neighbour-load estimate, read from
    # 10 ms kernel ticks, is meaningful). Best and median per-call time are reported.
    c.repeats = 3
    c.min_seconds = 0.02
    c.min_row_seconds = 0.5
    c.statistic = "best"  # best | median: the time used for ratios, fits and GFLOP/s
    c.max_call_seconds = 600.0  # skip a row whose predicted time per call exceeds this
    c.settle_seconds = 0.1  # pause between rows so one's worker threads go idle

    # Neighbour load: CPU time of other processes during a row, in cores.
    c.max_neighbour_cores = 0.25  # above this the row is repeated ...
    c.max_retries = 2  # ... up to this many times, then marked "disturbed"

    # Memory. Rows whose predicted peak exceeds the limit are not run ("does not fit").
    c.memory_limit_gib = 16.0
    c.machine_memory_gib = 24.0  # "largest N that fits" is reported against this
    c.matmul_size = 2048  # the matmul ceiling: jit(jnp.dot) on two [M, M] float32

    # Fits and verdict.
    c.fit_min_length = 1024  # exponents are fitted over N >= this (and over all N)
    c.quadratic_exponent_range = (1.7, 2.3)  # a time exponent in here counts as "quadratic"
    # Fractions of the fitted series that must be quadratic: all of them for "holds", none
    # for "does not hold" (the rule before Step 8).
    c.verdict.holds_at = 1.0
    c.verdict.fails_at = 0.0
    c.torch_threads = 0  # 0: as many threads as JAX's CPU client uses

    if variant == "tour":
        # 5 implementations x 3 lengths x 4 variants = 60 rows, about 2 minutes on an idle
        # 2-core CPU; the fits use all three lengths.
        c.impls = ("naive", "xla", "flax", "attnjax_chunked", "attnjax_default")
        c.lengths = (512, 1024, 2048)
        c.long_lengths = ()
        c.long_forward_length = 0
        c.fit_min_length = 512
        c.min_row_seconds = 0.3
        c.max_retries = 0  # a disturbed row is marked, not retried: the tour's time stays bounded
    elif variant == "smoke":
        c.impls = ("naive", "xla")
        c.lengths = (64, 128)
        c.long_lengths = ()
        c.long_forward_length = 0
        c.repeats = 2
        c.min_seconds = 0.002
        c.min_row_seconds = 0.02
        c.max_retries = 0
        c.settle_seconds = 0.0
        c.matmul_size = 256
        c.fit_min_length = 64
    return c
