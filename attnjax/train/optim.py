"""Optimiser and learning-rate schedules (optax)."""

from __future__ import annotations

import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "inverse_sqrt", "constant")


def learning_rate_schedule(
    learning_rate: float, *, warmup_steps: int, total_steps: int, schedule: str = "cosine"
) -> optax.Schedule:
    """Linear warmup, then cosine decay to 0, inverse square root (Vaswani et al. 2017,
    sec. 5.3, peak-normalised), or constant."""
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}")
    warmup_steps = max(int(warmup_steps), 1)
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    if schedule == "cosine":
        after = optax.cosine_decay_schedule(learning_rate, max(total_steps - warmup_steps, 1))
    elif schedule == "inverse_sqrt":
        # join_schedules evaluates every piece at (step - boundary), negative during warmup.
        after = lambda step: learning_rate * jnp.sqrt(
            warmup_steps / jnp.maximum(step + warmup_steps, warmup_steps)
        )
    else:
        after = optax.constant_schedule(learning_rate)
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(
    learning_rate: float,
    *,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "cosine",
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
    b1: float = 0.9,
    b2: float = 0.98,
) -> optax.GradientTransformation:
    """AdamW with global-norm gradient clipping and the given schedule."""
    lr = learning_rate_schedule(
        learning_rate, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule
    )
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    parts.append(optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*parts)
