"""Config of experiments/sqrt_dk.py: why softmax(q k^T / sqrt(d_k)) divides by sqrt(d_k),
at initialisation (unit-variance q, k, v) and in training (the same attention-only LM
trained with and without the scale).

Variants (``configs/sqrt_dk.py:VARIANT``):
  full (default): 5 seeds; d_k from 4 to 1024 at initialisation; training at d_k=64 and 128.
  tour: 3 seeds; training at d_k=64 only (one head per layer), 300 steps.
  smoke: 2 seeds, small shapes and 20 training steps, for the tests.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/sqrt_dk.py", arg, VARIANTS)
    config = common.base(variant)
    # ---- initialisation part: independent draws of (queries, keys, values, loss
    # direction) per seed and head dim, q, k, v ~ N(0, 1) entrywise (the unit-variance
    # assumption of Vaswani et al. 2017, footnote 4, under which q.k has variance d_k).
    config.head_dims = (4, 16, 64, 128, 256, 1024)  # the d_k sweep (figure)
    # The verdict is read at the head dims real models use (BERT, GPT-2, Llama: 64 or 128).
    config.judge_dims = (64, 128)
    config.batch_size = 4
    config.num_heads = 4
    config.query_length = 64
    config.key_length = 64  # S: the entropy is normalised by log S
    config.value_dim = 64  # fixed across the sweep, so only d_k changes

    config.thresholds = ml_collections.ConfigDict()
    # "Saturated": the mean largest attention weight is at least this (near one-hot rows).
    config.thresholds.saturated_max_weight = 0.9
    # "Vanishes": the unscaled gradient norm is at most this fraction of the scaled one
    # (an order of magnitude), for the median query and for the whole batch.
    config.thresholds.vanishing_grad_ratio = 0.1
    # Training part: the unscaled model's test loss exceeds the scaled one's by at least
    # this many nats (same seed: same initialisation and data for both arms).
    config.thresholds.train_loss_margin = 0.05

    # ---- training part: the attention-only LM on repeated random sequences
    # (attnjax/data/induction.py), scaled (1/sqrt(d_k)) vs unscaled (1.0).
    config.training = ml_collections.ConfigDict()
    config.training.head_dims = (64, 128)  # model_dim = num_heads * head_dim
    config.training.num_heads = 2
    config.training.num_layers = 2
    config.training.position = "learned"
    config.training.vocab_size = 34
    config.training.half_length = 12
    config.training.min_half_length = 4
    config.training.eval_batch_size = 128
    config.training.eval_seed = 4321  # the fixed test batch, disjoint from training draws
    # Both arms get the same learning-rate grid (one vmapped program per arm); each arm's
    # rate is chosen on the training stream's loss (fresh batches: held out), the test
    # batch reports.
    config.training.learning_rates = (1e-3, 3e-3)
    # Steps to reach this training loss (nats) are reported beside the final loss.
    config.training.loss_threshold = 2.5
    config.train = common.train(num_steps=1500, learning_rate=3e-3, batch_size=32,
                                warmup_steps=100, log_every=25, checkpoint_every=500)
    config.parallel = common.parallel()
    if variant == "tour":
        config.training.head_dims = (64,)
        config.training.num_heads = 1  # model_dim 64: one d_k=64 head per layer
        config.train.num_steps = 300
    if variant == "smoke":
        config.head_dims = (4, 64, 128, 1024)
        config.num_heads = 2
        config.query_length = 16
        config.key_length = 32
        config.value_dim = 16
        config.training.head_dims = (64,)
        config.training.num_heads = 1
        config.training.num_layers = 1
        config.training.vocab_size = 16
        config.training.half_length = 6
        config.training.min_half_length = 3
        config.training.eval_batch_size = 16
        config.training.learning_rates = (3e-3,)
        config.train.batch_size = 8
        common.smoke_train(config.train, num_steps=20)
    return config
