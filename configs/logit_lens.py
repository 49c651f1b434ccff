"""Config of experiments/logit_lens.py: the residual stream of SmolLM2-135M-Instruct after each
layer read through the final norm and the unembedding (nostalgebraist 2020); a pretrained
model: no seeds, intervals are bootstraps over the sentences.

Variants (``configs/logit_lens.py:VARIANT``):
  full (default) and tour: the three seed sentences and the 24 sentences of
    ``experiments/logit_lens.SENTENCES``; seconds to a minute on a CPU.
  smoke: the seed sentences and one more, for the tests.
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/logit_lens.py", arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.model_path = ""  # a Llama-family .gguf or Hugging Face folder; "" = SmolLM2-135M-Instruct
    c.num_sentences = 0  # 0 = every sentence (seed sentences first)
    # Prepended to every sentence and not scored: <|endoftext|>, the document separator
    # SmolLM2 was trained on (-1 = none; the first word is then position 0).
    c.prefix_id = 0
    c.figure_sentence = 0  # index of the sentence drawn as the layer x position table
    c.num_resamples = 2000  # sentence bootstrap (a weighted median per resample)
    c.bootstrap_seed = 0
    # Pre-registered (experiments/logit_lens.py RULE). (1) "only in the later layers": the
    # median over tokens of the layer from which the lens's top-1 is the model's final top-1
    # at every later layer must lie in the last third: the interval's lower end above
    # late_fraction * L;
    c.late_fraction = 2 / 3
    # (2) "builds up through depth": the Spearman correlation between depth (embeddings and
    # layers 1 .. L-1) and the token-mean KL(final || lens) must be below this (interval's
    # upper end).
    c.max_spearman = -0.9
    if variant == "smoke":
        c.num_sentences = 4
        c.num_resamples = 500
    return c
