"""Train a tiny decoder-only LM for a few steps under a chosen parallel layout and print its
loss curve: the check that a multi-device (or multi-process) setup trains exactly like one
device.

    python -m attnjax.parallel.check                       # one device: the reference curve
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python -m attnjax.parallel.check --data 4 --model 2 --fsdp
    python -m attnjax.parallel.launch -n 2 --local-devices 4 -- \\
        python -m attnjax.parallel.check --data 8 --out curve.json

The data are a pure function of the seed and step (``train.make_batch_fn``), so every layout
and every process sees the same global batches; the loop is ``train.fit`` with the step that
``parallel.train_step_for`` builds from the layout, or the ``pmap`` step with ``--pmap``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from attnjax import nn, train
from attnjax.parallel import distributed, pmap, sharding


def next_token_loss_fn(model: nn.DecoderOnlyLM):
    """``loss_fn(params, batch, key)`` for ``train.make_train_step``: mean next-token cross
    entropy of ``batch["tokens"] [B, T + 1]``, with the sums that combine across devices."""

    def loss_fn(params, batch, _key):
        logits = model.apply({"params": params}, batch["tokens"][:, :-1])
        loss_sum, weight_sum = train.cross_entropy(logits, batch["tokens"][:, 1:],
                                                   jnp.ones(logits.shape[:2]))
        return loss_sum / weight_sum, {"loss_sum": loss_sum, "weight_sum": weight_sum}

    return loss_fn


def lm_problem(*, vocab: int = 17, length: int = 16, examples: int = 256, seed: int = 0,
               num_steps: int = 20):
    """``(loss_fn, optimizer, state, arrays)`` of a tiny LM on random tokens (dropout off).

    The MLP uses GELU, not ReLU: ReLU's derivative jumps at 0, and a pre-activation within
    rounding of 0 (measured: 2e-7 in 1 of 12 batches) takes a different sign when the same
    sum is split differently over devices, which moves that unit's whole gradient column
    (by 4e-4 here). That is the kink, not the parallelism; GELU keeps the comparison about
    the parallelism."""
    cfg = nn.TransformerConfig(vocab_size=vocab, model_dim=32, num_heads=4, num_layers=2,
                               mlp_dim=64, dropout_rate=0.0, max_len=length,
                               activation="gelu")
    model = nn.DecoderOnlyLM(cfg)
    loss_fn = next_token_loss_fn(model)
    tokens = np.random.default_rng(seed).integers(1, vocab, size=(examples, length + 1))
    arrays = {"tokens": tokens.astype(np.int32)}
    params = model.init(jax.random.key(seed), arrays["tokens"][:2, :-1])["params"]
    optimizer = train.make_optimizer(3e-3, warmup_steps=2, total_steps=num_steps)
    return loss_fn, optimizer, train.TrainState.create(params, optimizer), arrays


def loss_curve(layout: ml_collections.ConfigDict | dict, *, num_steps: int = 20,
               batch_size: int = 16, seed: int = 0,
               checkpoint_dir: str | Path | None = None,
               stop_at: int | None = None) -> list[float]:
    """Per-step training losses of ``lm_problem`` under ``layout`` (``data``, ``model``,
    ``fsdp``, ``pmap``). With ``checkpoint_dir`` the run saves orbax checkpoints every 4
    steps there and resumes from the latest one (the losses of the steps it ran);
    ``stop_at`` ends the run early at that step, as a crash would (the schedule stays that of
    ``num_steps``)."""
    layout = ml_collections.ConfigDict(dict(layout))
    loss_fn, optimizer, state, arrays = lm_problem(seed=seed, num_steps=num_steps)
    batch_at = train.make_batch_fn(arrays, batch_size, seed)
    key = jax.random.key(seed)
    if layout.get("pmap", False):
        step = pmap.pmap_train_step(loss_fn, optimizer)
        state, losses = pmap.replicate(state), []
        for s in range(num_steps):
            state, metrics = step(state, pmap.shard_batch(batch_at(s)), key)
            losses.append(float(metrics["loss"][0]))
        return losses
    state, step = sharding.train_step_for(layout, loss_fn, optimizer, state)
    checkpointer = None if checkpoint_dir is None else train.Checkpointer(checkpoint_dir,
                                                                          every=4)
    _, records = train.fit(state, step, batch_at, num_steps=stop_at or num_steps,
                           base_key=key, log_every=1, progress=False,
                           checkpointer=checkpointer)
    return [r["loss"] for r in records if r["split"] == "train"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnjax.parallel.check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=int, default=1, help="0: all devices 'model' leaves")
    parser.add_argument("--model", type=int, default=1)
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--pmap", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="write the curve as JSON")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="save orbax checkpoints here every 4 steps; resume from them")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop at this step, as a crash would (resume with a second run)")
    args = parser.parse_args(argv)
    multi = distributed.initialize()
    tic = time.perf_counter()
    layout = {"data": args.data, "model": args.model, "fsdp": args.fsdp, "pmap": args.pmap}
    if args.pmap and args.checkpoint_dir is not None:
        parser.error("--checkpoint-dir is not supported with --pmap")
    losses = loss_curve(layout, num_steps=args.steps, batch_size=args.batch_size,
                        checkpoint_dir=args.checkpoint_dir, stop_at=args.stop_at)
    result = {"layout": layout, "processes": jax.process_count(),
              "devices": jax.device_count(), "local_devices": jax.local_device_count(),
              "seconds": time.perf_counter() - tic, "losses": losses}
    if jax.process_index() == 0:
        print(json.dumps(result))
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=1))
    if multi:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
