"""Config of experiments/translation.py: toy translation and SCAN with cross-attention.

Variants (``--config configs/translation.py:VARIANT``):
  tour (default)  toy English -> French-like task: transformer vs GRU with/without attention.
  toy             the same, trained longer (the acceptance run).
  scan_simple     SCAN simple split (Lake & Baroni 2018), transformer.
  scan_length     SCAN length split.
  scan_addjump    SCAN add-primitive ("jump") split.
  smoke           a few steps of everything, for the tests.
"""

import ml_collections


def get_config(arg=None):
    variant = arg or "tour"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.task = "toy"  # toy | scan
    c.scan_split = "simple"  # simple | length | addprim_jump | addprim_turn_left
    c.models = ("transformer", "gru", "gru_attention")

    c.toy = ml_collections.ConfigDict()
    c.toy.num_sentences = 12_000  # sampled (duplicates removed before the split)
    c.toy.test_fraction = 0.1
    c.toy.max_adjectives = 2
    c.toy.relative_clause_prob = 0.3
    c.toy.plural_prob = 0.4
    c.toy.negation_prob = 0.0

    c.transformer = ml_collections.ConfigDict()
    c.transformer.model_dim = 128
    c.transformer.num_heads = 4
    c.transformer.num_layers = 2
    c.transformer.mlp_dim = 256
    c.transformer.dropout_rate = 0.1
    c.transformer.position = "sinusoidal"
    c.transformer.pre_ln = True

    c.rnn = ml_collections.ConfigDict()
    c.rnn.embed_dim = 64
    c.rnn.hidden_dim = 128
    c.rnn.bidirectional_encoder = True
    c.rnn.dropout_rate = 0.1

    # Training devices (attnjax.parallel.train_step_for): `data` ways of data parallelism
    # (0 = all devices), `model` ways of tensor-parallel heads and MLP units, `fsdp` shards
    # parameters over "data". 1/1/False = one device. CPU: simulate devices with
    # XLA_FLAGS=--xla_force_host_platform_device_count=8 before starting.
    c.parallel = ml_collections.ConfigDict({"data": 1, "model": 1, "fsdp": False})
    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64
    # Group examples of similar target length and trim padding to a multiple of this
    # (0 = fixed shapes). Less padding per step, one compilation per distinct width.
    c.train.bucket_multiple = 0
    c.train.num_steps = 1_500
    c.train.learning_rate = 2e-3
    c.train.warmup_steps = 200
    c.train.schedule = "cosine"
    c.train.label_smoothing = 0.0
    c.train.clip_norm = 1.0
    c.train.weight_decay = 0.0
    c.train.log_every = 100
    c.train.eval_every = 0
    c.train.checkpoint_every = 500

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 512
    c.eval.beam_size = 1
    c.eval.max_examples = 0  # 0 = the whole test set
    c.eval.num_heatmaps = 4
    c.eval.min_exact_match = 0.98  # the verdict's bar for "translates correctly"

    if variant == "tour":
        pass
    elif variant == "toy":
        c.train.num_steps = 4_000
        c.toy.num_sentences = 30_000
    elif variant.startswith("scan_"):
        c.task = "scan"
        c.scan_split = {
            "scan_simple": "simple",
            "scan_length": "length",
            "scan_addjump": "addprim_jump",
        }[variant]
        c.models = ("transformer",)
        c.transformer.num_layers = 3
        c.transformer.dropout_rate = 0.1
        c.train.num_steps = 6_000
        c.train.batch_size = 128
        c.train.bucket_multiple = 16  # SCAN targets: mean 14 actions, longest 48
        c.train.learning_rate = 1e-3
        c.eval.min_exact_match = 0.99
    elif variant == "smoke":
        c.toy.num_sentences = 400
        c.transformer.model_dim = 32
        c.transformer.mlp_dim = 64
        c.transformer.num_layers = 1
        c.rnn.embed_dim = 16
        c.rnn.hidden_dim = 32
        c.train.num_steps = 12
        c.train.batch_size = 16
        c.train.warmup_steps = 2
        c.train.log_every = 4
        c.train.checkpoint_every = 6
        c.eval.max_examples = 32
        c.eval.batch_size = 32
        c.eval.num_heatmaps = 2
    else:
        raise ValueError(
            f"configs/translation.py: unknown variant {variant!r}; expected tour, toy, "
            "scan_simple, scan_length, scan_addjump or smoke"
        )
    return c
