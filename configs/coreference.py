"""Config of experiments/coreference.py: does the pronoun's attention go to the antecedent,
and does the model need that head?

Variants (``configs/coreference.py:VARIANT``):
  full (default)  5 seeds, fillers 0..60 tokens, held-out pairs and templates.
  tour            3 seeds, a smaller model, fillers 0..10.
  smoke           2 seeds, a few steps on a few sentences, for the tests.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/coreference.py", arg, VARIANTS)
    c = common.base(variant)
    # "identity": the pronoun's state scores the two candidate *words* (logits read at their
    # token ids), so it must carry which word it refers to; "position" (first/second
    # candidate) is solvable from the relation and property words alone.
    c.readout = "identity"

    c.task = ml_collections.ConfigDict()
    c.task.num_train = 20_000  # per seed (each seed draws its own sentences)
    c.task.num_test = 400  # per filler distance
    c.task.max_filler = 60  # training fillers are drawn from 0..max_filler tokens
    c.task.test_distances = (0, 20, 40, 60)
    c.task.held_out_pair_fraction = 0.2

    c.transformer = ml_collections.ConfigDict()
    c.transformer.model_dim = 64
    c.transformer.num_heads = 4
    c.transformer.num_layers = 2
    c.transformer.mlp_dim = 128
    c.transformer.dropout_rate = 0.0
    c.transformer.position = "sinusoidal"

    c.train = common.train(num_steps=3_000, learning_rate=1e-3, batch_size=64,
                           warmup_steps=200, checkpoint_every=1_000)
    c.parallel = common.parallel()

    # The causal test: how the chosen head (and the control head) are removed.
    c.ablation = "mean"  # "zero" or "mean" (the head's mean output on validation sentences)

    # The pre-registered per-seed bars (experiments/coreference.py: RULE).
    c.bars = ml_collections.ConfigDict()
    c.bars.min_accuracy = 0.9  # test accuracy at every filler distance
    c.bars.min_probe_accuracy = 0.9  # the validation-chosen head's test probe accuracy
    c.bars.min_excess_drop = 0.1  # ablating it minus ablating a random same-layer head

    if variant == "tour":
        c.task.num_train = 10_000
        c.task.num_test = 200
        c.task.max_filler = 10
        c.task.test_distances = (0, 5, 10)
        c.transformer.model_dim = 32
        c.transformer.mlp_dim = 64
        c.train = common.train(num_steps=1_000, learning_rate=3e-3, batch_size=64,
                               warmup_steps=100, checkpoint_every=500)
    elif variant == "smoke":
        c.task.num_train = 256
        c.task.num_test = 32
        c.task.max_filler = 6
        c.task.test_distances = (0, 6)
        c.transformer.model_dim = 16
        c.transformer.num_heads = 2
        c.transformer.num_layers = 1
        c.transformer.mlp_dim = 32
        common.smoke_train(c.train, num_steps=10, batch_size=16)
    return c
