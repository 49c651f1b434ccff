"""Config of experiments/positions.py: the same small transformers trained with no, sinusoidal,
learned, rotary and ALiBi positions, as a bidirectional encoder and as a causal decoder, on
tasks that need word order and a bag-of-words control.

Variants (``configs/positions.py:VARIANT``):
  full (default)  5 seeds, d=64, 3,000 steps of 64 examples per (task, seed); order tasks
                  coreference, precedence and recall, control bag.
  tour            3 seeds, d=32, 450 steps of 32; order tasks precedence and recall (the
                  whole 5 x 2 x 3 grid in under 5 min on 2 CPU cores).
  smoke           2 seeds, two encodings (none, rope), 10 steps of a d=16 model, for the tests.

The pre-registered rule (``experiments/positions.py: RULE``) reads its thresholds from ``rule``
and the seed fractions from ``verdict``. They were fixed before the first run of the
experiment; exploratory runs only chose the tasks' training budget (steps, width).
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/positions.py", arg, VARIANTS)
    c = common.base(variant)
    # "none" must be first: it is the arm every other encoding is compared with.
    c.encodings = ("none", "sinusoidal", "learned", "rope", "alibi")
    c.archs = ("encoder", "decoder")  # bidirectional vs causal self-attention
    # Tasks (experiments/positions.py: TASKS): order tasks, whose label changes when the tokens
    # are permuted, and the control, whose label is a function of the multiset of tokens.
    c.order_tasks = ("coreference", "precedence", "recall")
    c.control_task = "bag"

    # Winograd-style pronoun resolution (attnjax.data.coreference), restricted to the families
    # whose two candidates are of one kind (two people of one gender; two animals): "arjun beat
    # omar ... because he was strong" and "omar beat arjun ..." hold the same words, so only
    # their order tells the antecedent. Answer = the antecedent's token, scored among the two
    # candidates (chance 50%).
    c.coreference = ml_collections.ConfigDict()
    c.coreference.families = ("contest", "chase")
    c.coreference.num_train = 8_000  # per seed (each seed draws its own sentences)
    c.coreference.max_filler = 3  # filler tokens between the clause and "because": 0..3
    c.coreference.held_out_pair_fraction = 0.2  # test: held-out noun pairs (and templates)

    # Precedence: "x_1..x_M ?" with one A and one B among random symbols -> whichever comes
    # first (two-way, chance 50%): coarse order, as in "who did what to whom".
    c.precedence = ml_collections.ConfigDict()
    c.precedence.length = 12  # M
    c.precedence.num_symbols = 8  # filler ids 2..9; A, B and the query follow

    # Recall (attnjax.data.induction, fixed period): "BOS x_1..x_N x_1..x_j" -> x_{j+1}, the
    # token N - 1 places back from the end. The same tokens in another order give another
    # answer.
    c.recall = ml_collections.ConfigDict()
    c.recall.half_length = 6  # N; the sequence is 1 + N + j tokens, j in 1..N-1
    c.recall.vocab_size = 18  # token ids 2..17 (16 symbols; chance 1/16)

    # Bag-of-words control: "x_1..x_M ?" -> the most frequent symbol (a unique mode is drawn),
    # a function of the multiset alone.
    c.bag = ml_collections.ConfigDict()
    c.bag.length = 12  # M
    c.bag.num_symbols = 6  # ids 2..7

    c.transformer = ml_collections.ConfigDict()
    c.transformer.model_dim = 64
    c.transformer.num_heads = 4
    c.transformer.num_layers = 2
    c.transformer.mlp_dim = 128
    c.transformer.dropout_rate = 0.0

    c.train = common.train(num_steps=3_000, learning_rate=3e-3, batch_size=64,
                           warmup_steps=100, log_every=100, checkpoint_every=1_000)
    c.parallel = common.parallel()

    c.eval = ml_collections.ConfigDict()
    c.eval.num_dev = 512  # per task: chooses the best positional encoding of each seed
    c.eval.num_test = 1024  # per task: reported
    c.eval.seed = 12345  # dev/test sets: fixed across seeds and encodings (paired)

    # The pre-registered thresholds (accuracies are fractions; gaps are best - none, where
    # "best" is the positional encoding with the highest dev accuracy of that seed).
    c.rule = ml_collections.ConfigDict()
    c.rule.min_accuracy = 0.8  # the best encoding has learned the task (test accuracy)
    c.rule.needed_gap = 0.2  # encoder, order tasks: no positions is >= 20 points worse
    c.rule.recovered_gap = 0.05  # decoder, order tasks: no positions is <= 5 points worse
    c.rule.control_gap = 0.05  # bag control, both: |best - none| <= 5 points

    if variant == "tour":
        # Coreference is left out of the tour: it needs far more steps than 5 minutes allow
        # (exploratory runs: a d=32 encoder with learned positions stayed at 50% after 1,500
        # steps of 32 sentences; at d=64 after 2,000 steps of 64 it reached 92% on held-in
        # and 79% on held-out noun pairs, hence 3,000 steps in the full variant).
        c.order_tasks = ("precedence", "recall")
        c.coreference.num_train = 6_000
        c.transformer.model_dim = 32
        c.transformer.mlp_dim = 64
        # 450 steps: 600 took 7.4 min for the 10 arms on 2 cores, over the tour's 5 minutes.
        c.train = common.train(num_steps=450, learning_rate=3e-3, batch_size=32,
                               warmup_steps=50, log_every=100, checkpoint_every=450)
        c.eval.num_dev = 256
        c.eval.num_test = 512
    elif variant == "smoke":
        c.encodings = ("none", "rope")
        c.coreference.num_train = 256
        c.transformer.model_dim = 16
        c.transformer.num_heads = 2
        c.transformer.num_layers = 1
        c.transformer.mlp_dim = 32
        common.smoke_train(c.train, num_steps=10, batch_size=16)
        c.eval.num_dev = 64
        c.eval.num_test = 64
    return c
