"""Config of experiments/induction.py: induction heads and in-context learning in a 2-layer
attention-only transformer trained on repeated random token sequences.

Variants (``configs/induction.py:VARIANT``):
  tour (default): 2 layers x 4 heads, d=64, 4,000 steps of 32 sequences; under a minute.
  smoke: 60 steps of a smaller model, for the tests.
"""

import ml_collections

VARIANTS = ("tour", "smoke")


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(f"configs/induction.py: unknown variant {arg!r}; choose from {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.vocab_size = 64  # ids 2..63 are the random tokens
    c.half_length = 24  # sequences are BOS + 24 tokens + the same 24 again
    c.model = ml_collections.ConfigDict()
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.model_dim = 64
    c.model.position = "learned"
    # Training devices (attnjax.parallel.train_step_for): `data` ways of data parallelism
    # (0 = all devices), `model` ways of tensor-parallel heads and MLP units, `fsdp` shards
    # parameters over "data". 1/1/False = one device. CPU: simulate devices with
    # XLA_FLAGS=--xla_force_host_platform_device_count=8 before starting.
    c.parallel = ml_collections.ConfigDict({"data": 1, "model": 1, "fsdp": False})
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 4000
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3  # at 1e-3 no induction head had formed by step 3,000
    c.train.warmup_steps = 100
    c.train.weight_decay = 0.0
    c.train.log_every = 50
    c.train.checkpoint_every = 500
    c.eval_every = 100  # head scores and in-context loss are tracked at this interval
    c.eval_batch_size = 128
    # Verdict thresholds: an induction head has prefix-matching score >= this; the
    # in-context drop counts as "appeared" once it reaches this fraction of its final value.
    c.induction_threshold = 0.5
    c.appear_fraction = 0.5
    if variant == "smoke":
        c.vocab_size = 16
        c.half_length = 8
        c.model.model_dim = 32
        c.model.num_heads = 2
        c.train.num_steps = 60
        c.train.batch_size = 8
        c.train.log_every = 20
        c.train.checkpoint_every = 30
        c.eval_every = 20
        c.eval_batch_size = 16
    return c
