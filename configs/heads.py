"""Config of experiments/heads.py: do heads specialise, and how cleanly?

Extends configs/coreference.py (same task and encoder) with shorter fillers and fewer steps,
so that several models train in a couple of minutes.

Variants (``configs/heads.py:VARIANT``):
  tour (default): head counts 1, 2, 4, 8 at d=64, 2,000 steps each, and the toy translation
                  transformer (1,500 steps); ~5 minutes on a CPU.
  smoke: tiny models and a few steps, for the tests.
"""

import importlib.util
from pathlib import Path

VARIANTS = ("tour", "smoke")


def _coreference_config(arg):
    path = Path(__file__).with_name("coreference.py")
    spec = importlib.util.spec_from_file_location("coreference_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def get_config(arg=None):
    variant = arg or "tour"
    if variant not in VARIANTS:
        raise ValueError(f"configs/heads.py: unknown variant {arg!r}; choose from {VARIANTS}")
    c = _coreference_config("smoke" if variant == "smoke" else "tour")
    c.head_counts = (1, 2, 4, 8)  # trained at the same model_dim: same attention parameters
    c.num_heads = 4  # the model whose heads are classified and ablated
    c.task.max_filler = 20
    c.task.test_distances = (0, 10, 20)
    c.task.num_train = 10_000
    c.train.num_steps = 2_000
    c.train.checkpoint_every = 500
    c.classes = {"coreference_probe": 0.75, "positional": 0.5, "delimiter": 0.5,
                 "diffuse": 0.8, "alignment_aer": 0.3}
    c.translation_variant = "tour"  # configs/translation.py variant (transformer only)
    if variant == "smoke":
        c.head_counts = (1, 2)
        c.num_heads = 2
        c.task.max_filler = 6
        c.task.test_distances = (0, 6)
        c.task.num_train = 256
        c.train.num_steps = 10
        c.translation_variant = "smoke"
    return c
