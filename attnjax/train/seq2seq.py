"""Sequence-to-sequence glue: the loss, KV-cache decoding and evaluation of a model with
``model.apply(variables, source [B, S], target_in [B, T], deterministic=...) -> logits``.

Batches are dicts of int32 arrays: ``source [B, S]``, ``target_in [B, T]`` (BOS + target)
and ``target_out [B, T]`` (target + EOS), right-padded with ``pad_id``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax.nn import EncoderDecoder
from attnjax.train.decoding import StepFn, beam_search, greedy_decode
from attnjax.train.losses import cross_entropy, token_accuracy

Array = jax.Array
BOS_ID, EOS_ID, PAD_ID = 1, 2, 0


def seq2seq_loss_fn(model: nn.Module, *, label_smoothing: float = 0.0, pad_id: int = PAD_ID):
    """``loss_fn(params, batch, dropout_key) -> (mean token loss, sums)`` for ``fit``."""

    def loss_fn(params, batch, key):
        logits = model.apply(
            {"params": params}, batch["source"], batch["target_in"],
            deterministic=False, rngs={"dropout": key},
        )
        weights = batch["target_out"] != pad_id
        loss_sum, weight_sum = cross_entropy(
            logits, batch["target_out"], weights, label_smoothing=label_smoothing
        )
        correct_sum, _ = token_accuracy(logits, batch["target_out"], weights)
        sums = {"loss_sum": loss_sum, "weight_sum": weight_sum, "correct_sum": correct_sum}
        return loss_sum / jnp.maximum(weight_sum, 1.0), sums

    return loss_fn


def transformer_decoding(
    model: EncoderDecoder, params: Any, source: Array, max_len: int
) -> tuple[StepFn, Any]:
    """Step function and initial state for KV-cache decoding of an ``EncoderDecoder``.

    The source is encoded once; each step feeds one target token through the decoder,
    whose self-attention reads and extends the cache.
    """
    cfg = model.config.replace(decode=True, dropout_rate=0.0, attention_dropout_rate=0.0)
    stepper = EncoderDecoder(cfg)
    encoded = stepper.apply({"params": params}, source, method=EncoderDecoder.encode)
    dummy_target = jnp.zeros((source.shape[0], max_len), jnp.int32)
    # The cache starts as zeros of the shapes an init at full length would create.
    shapes = jax.eval_shape(stepper.init, jax.random.key(0), source, dummy_target)["cache"]
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def step_fn(state, tokens):
        cache, encoded, source = state
        logits, mutated = stepper.apply(
            {"params": params, "cache": cache}, encoded, source, tokens,
            method=EncoderDecoder.decode, mutable=["cache"],
        )
        return logits[:, -1], (mutated["cache"], encoded, source)

    return step_fn, (cache, encoded, source)


@partial(jax.jit, static_argnames=("model", "max_len", "beam_size"))
def decode(model: nn.Module, params: Any, source: Array, *, max_len: int, beam_size: int = 1):
    """``[B, max_len]`` predicted target ids (EOS included, then padding), greedy or beam."""
    if isinstance(model, EncoderDecoder):
        step_fn, state = transformer_decoding(model, params, source, max_len)
    elif hasattr(model, "decoding"):
        step_fn, state = model.decoding(params, source, max_len)
    else:
        raise TypeError(
            f"decode: {type(model).__name__} has no KV-cache or step decoding; expected an "
            "EncoderDecoder or a model with `decoding(params, source, max_len)`"
        )
    common = dict(batch_size=source.shape[0], max_len=max_len, bos_id=BOS_ID, eos_id=EOS_ID,
                  pad_id=PAD_ID)
    if beam_size == 1:
        return greedy_decode(step_fn, state, **common)
    return beam_search(step_fn, state, beam_size=beam_size, **common)[0]


@partial(jax.jit, static_argnums=0)
def _teacher_forced(model: nn.Module, params: Any, source: Array, target_in: Array) -> Array:
    # Module-level and keyed by the (hashable) module: one compilation per model and shape
    # across calls, where a jit built inside evaluate_seq2seq recompiled on every call.
    return model.apply({"params": params}, source, target_in)


def _padded_batches(arrays: dict[str, np.ndarray], batch_size: int):
    """Fixed-shape batches (the last one padded with copies of row 0) and their real sizes,
    so that evaluation compiles once."""
    n = len(arrays["source"])
    for start in range(0, n, batch_size):
        chunk = {k: v[start : start + batch_size] for k, v in arrays.items()}
        real = len(chunk["source"])
        if real < batch_size:
            chunk = {k: np.concatenate([v, np.repeat(v[:1], batch_size - real, 0)])
                     for k, v in chunk.items()}
        yield chunk, real


def evaluate_seq2seq(
    model: nn.Module,
    params: Any,
    arrays: dict[str, np.ndarray],
    *,
    batch_size: int = 256,
    beam_size: int = 1,
    max_len: int | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Exact-match sequence accuracy (decoded), token accuracy and loss (teacher-forced).

    Returns:
      ``(metrics, predictions [N, max_len])``.
    """
    target_out = arrays["target_out"]
    max_len = max_len or target_out.shape[1]
    predictions, loss_sum, correct_sum, weight_sum = [], 0.0, 0.0, 0.0
    for batch, real in _padded_batches(arrays, batch_size):
        logits = _teacher_forced(model, params, batch["source"], batch["target_in"])[:real]
        targets = batch["target_out"][:real]
        weights = targets != PAD_ID
        loss, weight = cross_entropy(logits, targets, weights)
        correct, _ = token_accuracy(logits, targets, weights)
        loss_sum, correct_sum, weight_sum = (
            loss_sum + float(loss), correct_sum + float(correct), weight_sum + float(weight)
        )
        predicted = decode(model, params, batch["source"], max_len=max_len, beam_size=beam_size)
        predictions.append(np.asarray(predicted)[:real])
    predictions = np.concatenate(predictions)
    width = max(predictions.shape[1], target_out.shape[1])
    pad = lambda x: np.pad(x, ((0, 0), (0, width - x.shape[1])))
    exact = np.all(pad(predictions) == pad(target_out), axis=1)
    metrics = {
        "exact_match": float(exact.mean()),
        "token_accuracy": correct_sum / weight_sum,
        "loss": loss_sum / weight_sum,
        "num_examples": int(len(exact)),
    }
    return metrics, predictions


def train_seq2seq(
    model: nn.Module,
    arrays: dict[str, np.ndarray],
    *,
    config,
    seeds,
    name: str = "seq2seq",
    run_dir=None,
    **train_kwargs,
):
    """Trains a seq2seq ``model`` on ``arrays`` (``source``, ``target_in``, ``target_out``
    ``[N, ...]``) for every seed with ``attnjax.train.train``; returns its ``TrainResult``.

    ``config`` is a train block plus ``label_smoothing`` (default 0) and
    ``bucket_multiple`` (0: no length buckets; else each epoch groups similar target lengths
    and trims padding to that multiple; vmapped seeds are padded to a common shape).
    Tokens/s counts non-padding target tokens.
    """
    from attnjax.train.loop import make_batch_fn
    from attnjax.train.trainer import train

    n = len(arrays["source"])
    batch_size = min(int(config["batch_size"]), n)
    bucket = int(config.get("bucket_multiple", 0) or 0)
    batch_fns: dict[int, Any] = {}

    def batches(rngs, step):
        if rngs.seed not in batch_fns:
            batch_fns[rngs.seed] = make_batch_fn(
                arrays, batch_size, rngs.int("data_order"),
                bucket_by="target_out" if bucket else None, pad_to_multiple=bucket or 1)
        return batch_fns[rngs.seed](step)

    return train(
        name=name, seeds=seeds, config=config,
        init=lambda key: model.init(key, arrays["source"][:2], arrays["target_in"][:2])["params"],
        loss_fn=seq2seq_loss_fn(model, label_smoothing=float(config.get("label_smoothing", 0.0))),
        batches=batches, run_dir=run_dir,
        tokens_in=lambda b: int((b["target_out"] != PAD_ID).sum()), **train_kwargs,
    )
