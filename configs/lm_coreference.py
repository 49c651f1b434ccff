"""Config of experiments/lm_coreference.py: which head of SmolLM2-135M-Instruct sends a
pronoun to its antecedent on WSC273, against a label-swap null and Trinh & Le's LM scoring
(a pretrained model: no seeds; intervals are bootstraps over the schema groups).

Variants (``configs/lm_coreference.py:VARIANT``):
  full (default): all 273 WSC273 sentences (136 groups), 1000 null draws; a few minutes on
    a CPU (819 forward passes: 273 with attention, 546 substituted sentences).
  tour: the same sentences and draws (the null is cheap; the forward passes are the cost).
  smoke: the first 12 schema groups (24 sentences) and 200 draws, for the tests.

Needs ../shared/data/wsc/WSCollection.xml beside the checkout (or ``--config.wsc_path``).
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/lm_coreference.py", arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.model_path = ""  # a GGUF file or Hugging Face Llama folder; "" = SmolLM2-135M-Instruct
    c.wsc_path = ""  # "" = ../shared/data/wsc/WSCollection.xml beside the checkout
    c.num_groups = 0  # 0 = every WSC273 schema group
    # Every sequence starts with this token (SmolLM2's document separator) so that the
    # sentence's first word is not the attention sink and LM scoring scores it; "" = none.
    c.prefix_token = "<|endoftext|>"
    c.batch_size = 32
    # Sequences are padded to a multiple of 16 tokens, at least this many: WSC273 needs
    # two lengths (32, 48), i.e. two compilations of the 30-layer model.
    c.min_length = 32
    # Pre-registered (experiments/lm_coreference.py RULE), fixed before the first run.
    c.num_heads = 270  # 30 layers x 9 heads: the heads the best is chosen among
    c.split_seed = 0  # which schema groups select the head and which test it
    c.null_draws = 1000  # label-swap draws of the select-then-score procedure
    c.null_seed = 1
    c.null_quantile = 0.95  # part (1): held-out accuracy must exceed this quantile
    c.chance_accuracy = 0.5  # part (2): the interval's lower end must exceed this
    # WSC273 indices shown in the attention figure (the trophy / suitcase twins).
    c.example_indices = (2, 3)
    if variant == "smoke":
        c.num_groups = 12
        c.null_draws = 200
        c.batch_size = 16
    return c
