"""Blocks every experiment config shares: training, devices, seeds, the verdict's seed rule,
and the variant conventions (``tour``, ``smoke``, full).

    from configs import common

    c = common.base(variant, seeds_full=5)      # seeds, vmap_seeds, verdict.holds_at/fails_at
    c.train = common.train(num_steps=3000, learning_rate=1e-3, warmup_steps=200)
    c.parallel = common.parallel()

The seed counts follow ``shared/docs/protocol.md``: >= 5 seeds in the full (default) variant,
>= 3 in ``tour``, 2 in ``smoke``.
"""

from __future__ import annotations

import ml_collections

SEEDS = {"full": 5, "tour": 3, "smoke": 2}


def seeds(variant: str, *, full: int = SEEDS["full"], first: int = 0) -> tuple[int, ...]:
    """The seeds of a variant: ``full`` seeds for the default, 3 for tour, 2 for smoke (a
    variant name that starts with ``smoke`` or ``tour`` counts as such)."""
    if variant.startswith("smoke"):
        n = SEEDS["smoke"]
    elif variant.startswith("tour"):
        n = SEEDS["tour"]
    else:
        n = max(full, SEEDS["full"])
    return tuple(range(first, first + n))


def base(variant: str, *, seeds_full: int = SEEDS["full"]) -> ml_collections.ConfigDict:
    """A config with ``seeds``, ``vmap_seeds`` and the ``verdict`` seed rule.

    ``verdict.holds_at`` / ``verdict.fails_at``: the fractions of seeds in which the per-seed
    test must pass for "holds" / may pass for "does not hold"
    (``attnjax.experiment.seed_verdict``); part of the pre-registered rule.
    """
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seeds = seeds(variant, full=seeds_full)
    c.vmap_seeds = "auto"  # "auto" / "true" / "false" (attnjax.train.train)
    c.verdict = ml_collections.ConfigDict()
    c.verdict.holds_at = 0.8
    c.verdict.fails_at = 0.2
    return c


def train(
    *,
    num_steps: int,
    learning_rate: float,
    batch_size: int = 64,
    warmup_steps: int = 100,
    schedule: str = "cosine",
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    log_every: int = 100,
    checkpoint_every: int = 1000,
    **extra,
) -> ml_collections.ConfigDict:
    """The train block ``attnjax.train.train`` reads (AdamW, warmup, schedule, clipping,
    logging and checkpoint intervals); ``extra`` fields are kept (e.g. ``label_smoothing``)."""
    c = ml_collections.ConfigDict()
    c.num_steps = num_steps
    c.batch_size = batch_size
    c.learning_rate = learning_rate
    c.warmup_steps = warmup_steps
    c.schedule = schedule
    c.weight_decay = weight_decay
    c.clip_norm = clip_norm
    c.log_every = log_every
    c.checkpoint_every = checkpoint_every
    for name, value in extra.items():
        c[name] = value
    return c


def smoke_train(c: ml_collections.ConfigDict, *, num_steps: int = 30,
                batch_size: int | None = None) -> None:
    """Shrinks a train block in place to a few steps (smoke variants)."""
    c.num_steps = num_steps
    c.warmup_steps = min(c.warmup_steps, num_steps // 3)
    c.log_every = max(1, min(c.log_every, num_steps // 3))
    c.checkpoint_every = max(1, min(c.checkpoint_every, num_steps // 2))
    if batch_size is not None:
        c.batch_size = batch_size


def parallel(data: int = 1, model: int = 1, fsdp: bool = False) -> ml_collections.ConfigDict:
    """Training devices (``attnjax.parallel.train_step_for``): ``data`` ways of data
    parallelism (0 = all devices), ``model`` ways of tensor-parallel heads and MLP units,
    ``fsdp`` shards parameters over "data". 1/1/False = one device (seeds vmapped). On a CPU,
    simulate devices with XLA_FLAGS=--xla_force_host_platform_device_count=8. With more
    than one device, seeds train one after another on the mesh."""
    return ml_collections.ConfigDict({"data": data, "model": model, "fsdp": fsdp})


def check_variant(path: str, arg, variants) -> str:
    """``arg`` or the first variant; a clear error naming the file for an unknown one."""
    variant = arg or variants[0]
    if variant not in variants:
        raise ValueError(f"{path}: unknown variant {arg!r}; choose from {tuple(variants)}")
    return variant
