"""Training and evaluating ``PositionClassifier``s (one label per sequence, read at one
position) with the generic loop: the probes of coreference, agreement and recall."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnjax.train.loop import batches_of, make_batch_fn
from attnjax.train.trainer import TrainResult, train

Batch = dict[str, np.ndarray]


def model_inputs(batch: Batch, position_key: str) -> tuple:
    """``(tokens, positions[, choices])``: the classifier's arguments from a batch."""
    inputs = (batch["tokens"], batch[position_key])
    return inputs + (batch["choices"],) if "choices" in batch else inputs


def classification_loss_fn(model: nn.Module, position_key: str):
    """``loss_fn(params, batch, dropout_key) -> (mean cross-entropy, sums)`` for ``fit``.

    ``batch`` holds ``tokens [B, L]``, ``label [B]``, ``batch[position_key] [B]``, the
    position the classifier reads, and optionally ``choices [B, K]`` (then ``label``
    indexes into them; see ``PositionClassifier``).
    """

    def loss_fn(params, batch, key):
        logits = model.apply(
            {"params": params}, *model_inputs(batch, position_key),
            deterministic=False, rngs={"dropout": key},
        )
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), batch["label"]
        )
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        n = jnp.asarray(losses.shape[0], jnp.float32)
        sums = {"loss_sum": losses.sum(), "weight_sum": n, "correct_sum": correct.sum()}
        return losses.mean(), sums

    return loss_fn


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: nn.Module, params: Any, *inputs: jax.Array) -> jax.Array:
    # Modules hash by their fields: one compilation per model and shape, across calls.
    return model.apply({"params": params}, *inputs)


def map_in_batches(fn, arrays: Batch, batch_size: int = 512) -> np.ndarray:
    """``fn(batch) -> [b, ...]`` over ``arrays`` in batches of one fixed size (the last one
    zero-padded and its padding rows dropped), so a jitted ``fn`` compiles once; the results
    are concatenated along the first axis."""
    n = len(next(iter(arrays.values())))
    size = min(batch_size, n)
    chunks = []
    for batch in batches_of(arrays, size):
        rows = len(next(iter(batch.values())))
        padded = {k: np.pad(v, [(0, size - rows)] + [(0, 0)] * (v.ndim - 1))
                  for k, v in batch.items()}
        chunks.append(np.asarray(fn(padded))[:rows])
    return np.concatenate(chunks)


def predict(model: nn.Module, params: Any, arrays: Batch, position_key: str,
            batch_size: int = 512) -> np.ndarray:
    """``[N, C]`` logits of every example (``arrays["tokens"]`` read at
    ``arrays[position_key]``; ``[N, K]`` with ``arrays["choices"]``)."""
    keys = ("tokens", position_key, "choices")
    return map_in_batches(
        lambda b: _apply(model, params, *model_inputs(b, position_key)),
        {k: arrays[k] for k in keys if k in arrays}, batch_size,
    )


def train_classifier(
    model: nn.Module,
    arrays: Batch,
    *,
    position_key: str,
    config: Mapping,
    seeds: Sequence[int],
    name: str = "classifier",
    run_dir=None,
    stop_at_accuracy: float | None = None,
    **train_kwargs,
) -> TrainResult:
    """Trains ``model`` on ``arrays`` for every seed with ``attnjax.train.train``.

    Args:
      arrays: ``tokens [N, L]``, ``label [N]``, ``arrays[position_key] [N]`` and optionally
        ``choices [N, K]``.
      config: a train block (``num_steps``, ``batch_size``, ``learning_rate``, ...).
      seeds: seeds; each varies initialisation and batch order (the data set is the
        caller's: draw it per seed for a data-draw axis).
      stop_at_accuracy: stop at the first logged interval whose training accuracy reaches
        it (in every seed).
      train_kwargs: passed on (``learning_rates``, ``vmap_seeds``, ``parallel``, ...).
    """
    n = len(arrays["tokens"])
    batch_size = min(int(config["batch_size"]), n)
    example = tuple(x[:2] for x in model_inputs(arrays, position_key))
    batch_fns: dict[int, Any] = {}

    def batches(rngs, step):
        if rngs.seed not in batch_fns:
            batch_fns[rngs.seed] = make_batch_fn(arrays, batch_size, rngs.int("data_order"))
        return batch_fns[rngs.seed](step)

    return train(
        name=name, seeds=seeds, config=config,
        init=lambda key: model.init(key, *example)["params"],
        loss_fn=classification_loss_fn(model, position_key), batches=batches,
        run_dir=run_dir,
        stop_when=None if stop_at_accuracy is None
        else lambda r: r.get("token_accuracy", 0.0) >= stop_at_accuracy,
        **train_kwargs,
    )


def fit_classifier(
    model: nn.Module,
    arrays: Batch,
    *,
    position_key: str,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    warmup_steps: int = 100,
    weight_decay: float = 0.0,
    clip_norm: float = 1.0,
    log=None,
    log_every: int = 100,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    description: str = "train",
    stop_at_accuracy: float | None = None,
) -> tuple[Any, dict]:
    """One seed of ``train_classifier`` with the train block given as arguments (AdamW +
    warmup/cosine); resumes from ``checkpoint_dir``. Returns ``(params, {"train_seconds",
    "steps", "final_train_loss", "final_train_accuracy", "num_params"})``."""
    config = {"num_steps": num_steps, "batch_size": batch_size,
              "learning_rate": learning_rate, "warmup_steps": warmup_steps,
              "schedule": "cosine", "weight_decay": weight_decay, "clip_norm": clip_norm,
              "log_every": log_every, "checkpoint_every": checkpoint_every}
    result = train_classifier(
        model, arrays, position_key=position_key, config=config, seeds=[seed],
        name=description, stop_at_accuracy=stop_at_accuracy, checkpoint_dir=checkpoint_dir,
        log=log,
    )
    final = result.final[0]
    return result.params[0], {
        "train_seconds": result.seconds,
        "steps": int(final.get("step", 0)),
        "final_train_loss": final.get("loss"),
        "final_train_accuracy": final.get("token_accuracy"),
        "num_params": result.num_params,
    }
