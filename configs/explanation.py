"""Config of experiments/explanation.py: is high attention weight high importance?
(Jain & Wallace 2019, on a toy sentiment classifier with known evidence.)

Variants (``configs/explanation.py:VARIANT``):
  tour (default): 2-layer d=32 classifier, 1,500 steps, 300 test sentences; about a minute.
  smoke: a few steps and sentences, for the tests.
"""

import ml_collections

VARIANTS = ("tour", "smoke")


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(f"configs/explanation.py: unknown variant {arg!r}; choose from {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.length = 12  # words after CLS
    c.negation_rate = 0.3
    c.num_train = 20_000
    c.num_test = 300
    c.model = ml_collections.ConfigDict()
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.model_dim = 32
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1500
    c.train.batch_size = 64
    c.train.learning_rate = 3e-3
    c.permutations = 20
    # Verdict: the output counts as insensitive to the attention when the median change of
    # the predicted probability under random permutations is below this.
    c.insensitive_change = 0.05
    c.adversarial = ml_collections.ConfigDict()
    c.adversarial.epsilon = 0.01  # |change in the predicted probability| allowed
    c.adversarial.steps = 300
    c.adversarial.learning_rate = 0.1
    c.adversarial.penalty = 100.0
    c.adversarial.init_noise = 1.0
    c.adversarial.large_jsd = 0.3  # nats (max ln 2 = 0.69)
    if variant == "smoke":
        c.num_train = 512
        c.num_test = 16
        c.train.num_steps = 30
        c.train.batch_size = 32
        c.permutations = 3
        c.adversarial.steps = 10
    return c
