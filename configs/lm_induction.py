"""Config of experiments/lm_induction.py: induction heads in a real LLM (SmolLM2-135M-Instruct,
30 layers x 9 heads) on repeated random token sequences, and what ablating them does; a
pretrained model: no seeds, intervals are bootstraps over the sequences.

Variants (``configs/lm_induction.py:VARIANT``):
  full (default): 96 sequences of 31 tokens repeated once (63 tokens with the prefix), 10
    layer-matched random control draws; minutes on a CPU.
  tour: 32 sequences, 5 control draws (~1-2 minutes on a CPU).
  smoke: 8 sequences of 15 tokens, 2 control draws, for the tests (seconds once the model
    is loaded).
"""

import ml_collections

from configs import common

VARIANTS = ("full", "tour", "smoke")


def get_config(arg=None):
    variant = common.check_variant("configs/lm_induction.py", arg, VARIANTS)
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.model_path = ""  # a Llama-family .gguf or Hugging Face folder; "" = SmolLM2-135M-Instruct
    # Data: [prefix, x_1..x_N, x_1..x_N], x drawn without replacement from the "ordinary"
    # ids in token_range (a space then letters only, e.g. " catalyst": whole English words,
    # no digits, punctuation, code or special tokens).
    c.num_sequences = 96  # the first half selects the heads, the second half is held out
    c.half_length = 31  # N
    c.token_range = (1000, 20000)
    c.prefix_id = 0  # <|endoftext|>, the document separator SmolLM2 was trained on
    c.data_seed = 0
    c.batch_size = 8  # one shape for every forward pass: one compilation
    c.num_ablated = 10  # k: the top-k heads by selection-half prefix-matching score
    c.control_draws = 10  # layer-matched random k-head sets (never a chosen head)
    c.control_seed = 1
    # The first mode is the rule's; the others are reported beside it. "mean": a head's
    # output is replaced by its mean over the selection half's positions (what it says on
    # average, without what it says about this input); "zero": by 0.
    c.ablation_modes = ("mean", "zero")
    # Pre-registered (experiments/lm_induction.py RULE); each part reads the lower end of a
    # 95% interval over sequences. (1) in-context: first-occurrence loss minus repeat loss
    # above this many nats (Olsson et al. 2022's ~0.4 nats after the phase change);
    c.icl_threshold = 0.4
    # (2) an induction head: the selection-chosen top head's held-out prefix-matching score
    # above this (uniform causal attention gives ~1/position, ~0.02 at 50 tokens);
    c.prefix_threshold = 0.4
    # (3) targeted vs random: repeat-loss rise (induction heads) minus rise (control) > 0;
    # (4) "removing them removes the in-context gain": the rise exceeds this fraction of
    # the sequence's in-context gain.
    c.removed_fraction = 0.5
    if variant == "tour":
        c.num_sequences = 32
        c.control_draws = 5
    if variant == "smoke":
        c.num_sequences = 8
        c.half_length = 15
        c.batch_size = 4
        c.control_draws = 2
    return c
