"""Config of experiments/explanation.py: is high attention weight high importance?
(Jain & Wallace 2019, with the uniform-attention control of Wiegreffe & Pinter 2019, on a
toy sentiment classifier whose evidence tokens are known.)

Every seed draws its own sentences, initialisation and batch order; the seeds (and the
uniform-attention arm) train vmapped.

Variants (``configs/explanation.py:VARIANT``):
  full (default): 5 seeds, 1,500 steps, 300 test sentences.
  tour: 3 seeds, 800 steps, 200 test sentences (<= 90 s on a 2-core CPU).
  smoke: 2 seeds, a few steps and sentences, for the tests.

The pre-registered rule (``experiments/explanation.py: RULE``) reads ``verdict.*``.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/explanation.py", arg, VARIANTS)
    c = common.base(variant)
    c.length = 12  # words after CLS
    c.negation_rate = 0.3
    # A "not" elsewhere in this fraction of sentences (attnjax.data.sentiment): the label then
    # depends on where "not" is, which a bag of words (uniform attention) cannot see.
    c.distractor_rate = 0.5
    c.num_train = 20_000
    c.num_test = 300
    c.model = ml_collections.ConfigDict()
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.model_dim = 32
    c.train = common.train(num_steps=1_500, learning_rate=3e-3, batch_size=64,
                           warmup_steps=100, log_every=100, checkpoint_every=500)
    c.permutations = 20
    c.adversarial = ml_collections.ConfigDict()
    c.adversarial.epsilon = 0.01  # |change in the predicted probability| allowed
    c.adversarial.steps = 300
    c.adversarial.learning_rate = 0.1
    c.adversarial.penalty = 100.0
    c.adversarial.init_noise = 1.0
    # The rule's thresholds (with verdict.holds_at / fails_at from common.base).
    c.verdict.agree_margin = 0.1  # tau(attention, LOO) must be this far below tau(grad, LOO)
    c.verdict.large_jsd = 0.3  # nats (max ln 2 = 0.69)
    c.verdict.adversarial_fraction = 0.5  # of sentences, in every layer
    c.verdict.uniform_gap = 0.05  # accuracy the uniform-attention model must lose
    if variant == "tour":
        c.num_train = 10_000
        c.num_test = 200
        c.train.num_steps = 800
        c.permutations = 10
        c.adversarial.steps = 200
    elif variant == "smoke":
        c.num_train = 512
        c.num_test = 16
        common.smoke_train(c.train, num_steps=30, batch_size=32)
        c.permutations = 3
        c.adversarial.steps = 10
    return c
