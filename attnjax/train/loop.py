"""A small, generic, jitted training loop with orbax checkpoints that resume exactly.

Exact resumption on CPU rests on two rules: the batch of step ``s`` is a pure function of
``s`` (``epoch_batch_indices``), and the dropout key of step ``s`` is
``fold_in(base_key, s)``. Nothing else carries state, so a run killed at any point and
restarted from its last checkpoint replays the same steps and ends with the same parameters.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from attnjax.data.batching import bucket_by_length

Array = jax.Array
Batch = dict[str, np.ndarray]
LossFn = Callable[[Any, Batch, Array], tuple[Array, dict[str, Array]]]


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes: the step counter, the parameters, the optimiser state."""

    step: Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, optimizer: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.array(0, jnp.int32), params=params, opt_state=optimizer.init(params))


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, *, jit: bool = True,
    donate: bool = True,
) -> Callable[[TrainState, Batch, Array], tuple[TrainState, dict[str, Array]]]:
    """Build the jitted ``step(state, batch, base_key) -> (state, metrics)``.

    With ``donate=True`` (the default) the step *donates* its input state: XLA reuses its
    buffers for the new state, so the arrays of the state you passed are deleted ("Array
    has been deleted" if you touch them again). Keep a copy (``jax.tree.map(jnp.copy, s)``)
    or pass ``donate=False`` to keep using it.

    Args:
      loss_fn: ``loss_fn(params, batch, dropout_key) -> (loss, sums)``, where ``loss`` is
        what is differentiated and ``sums`` are summed statistics (e.g. ``loss_sum``,
        ``weight_sum``, ``correct_sum``) that aggregate exactly over steps.
      optimizer: an optax transformation.
      jit: ``False`` returns the plain function (``attnjax.parallel`` jits it with shardings).
      donate: donate the state argument (see above).
    """

    def step(state: TrainState, batch: Batch, base_key: Array):
        key = jax.random.fold_in(base_key, state.step)
        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**sums, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    if not jit:
        return step
    return jax.jit(step, donate_argnums=0) if donate else jax.jit(step)


def epoch_batch_indices(
    num_examples: int, batch_size: int, step: int, seed: int
) -> np.ndarray:
    """Example indices of the batch at ``step``: a fresh permutation per epoch, seeded by
    ``(seed, epoch)``; the ragged tail of each epoch is dropped so shapes never change."""
    if batch_size > num_examples:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} examples")
    per_epoch = num_examples // batch_size
    epoch, position = divmod(int(step), per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[position * batch_size : (position + 1) * batch_size]


def make_batch_fn(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    seed: int,
    *,
    bucket_by: str | None = None,
    pad_to_multiple: int = 8,
) -> Callable[[int], Batch]:
    """``batch_at(step)``: the batch of any step, a pure function of ``(seed, step)``.

    Args:
      arrays: ``{name: [N, ...]}`` examples.
      bucket_by: if set (e.g. ``"target_out"``), each epoch groups examples of similar
        length in that array and trims padding columns to a multiple of ``pad_to_multiple``
        (``attnjax.data.bucket_by_length``): less padding, a few more compilations.
    """
    n = len(next(iter(arrays.values())))
    if bucket_by is None:
        return lambda step: {
            k: v[epoch_batch_indices(n, batch_size, step, seed)] for k, v in arrays.items()
        }
    per_epoch = n // batch_size
    cache: dict[int, list[Batch]] = {}

    def batch_at(step: int) -> Batch:
        epoch, position = divmod(int(step), per_epoch)
        if epoch not in cache:
            cache.clear()  # one epoch in memory at a time
            cache[epoch] = list(bucket_by_length(
                arrays, batch_size, length_key=bucket_by, drop_remainder=True,
                rng=np.random.default_rng([seed, epoch]), pad_to_multiple=pad_to_multiple,
            ))
        return cache[epoch][position]

    return batch_at


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped training cleanly: pending checkpoint writes finished,
    nothing half-written left behind. ``step`` is the step a rerun resumes from."""

    def __init__(self, step: int | None):
        super().__init__(f"stopped at step {step}; rerun the same command to resume")
        self.step = step


class Checkpointer:
    """Saves ``TrainState`` every ``every`` steps under ``directory``, keeps the last few."""

    def __init__(self, directory: str | Path, *, every: int, max_to_keep: int = 2):
        if every < 1:
            raise ValueError(f"`every` (checkpoint interval) must be >= 1, got {every}")
        self.every = every
        self.directory = Path(directory).resolve()
        # A kill -9 during a save leaves a temporary folder; orbax never reads it as a
        # checkpoint, and removing it keeps the folder clean.
        self._remove_temporaries()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, save_interval_steps=every, create=True
            ),
        )

    def _remove_temporaries(self) -> None:
        if self.directory.is_dir():
            for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_or(self, state: TrainState) -> TrainState:
        """The latest saved state (same structure as ``state``), or ``state`` if none."""
        latest = self.manager.latest_step()
        if latest is None:
            return state
        return self.manager.restore(latest, args=ocp.args.StandardRestore(state))

    def save(self, step: int, state: TrainState, *, force: bool = False) -> None:
        """Save ``state`` (whose step counter is ``step``) if ``step`` is due, or ``force``."""
        if force or step % self.every == 0:
            self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
        self._remove_temporaries()


def _records(sums: dict[str, np.ndarray], steps: int, elapsed: float, done: int,
             seeds: Sequence[int] | None, tokens: int | None) -> list[dict]:
    """Training records of one logging interval: one, or one per seed of a seed axis."""
    members = [None] if seeds is None else list(range(len(seeds)))
    out = []
    for i in members:
        s = {k: float(v if i is None else v[i]) for k, v in sums.items()}
        record = {"step": done, "split": "train", "seconds": elapsed,
                  "steps_per_second": steps / elapsed}
        if i is not None:
            record["seed"] = int(seeds[i])
        if "loss_sum" in s and s.get("weight_sum"):
            record["loss"] = s["loss_sum"] / s["weight_sum"]
        else:
            record["loss"] = s["loss"] / steps
        if "correct_sum" in s and s.get("weight_sum"):
            record["token_accuracy"] = s["correct_sum"] / s["weight_sum"]
        record["grad_norm"] = s["grad_norm"] / steps
        if tokens is not None:
            record["tokens_per_second"] = tokens / elapsed
        out.append(record)
    return out


def fit(
    state: TrainState,
    train_step: Callable,
    batch_at: Callable[[int], Batch],
    *,
    num_steps: int,
    base_key: Array,
    log: Callable[[dict], None] | None = None,
    log_every: int = 50,
    evaluate: Callable[[TrainState], dict | list[dict]] | None = None,
    eval_every: int = 0,
    checkpointer: Checkpointer | None = None,
    tokens_in: Callable[[Batch], int] | None = None,
    progress: bool = True,
    description: str = "train",
    stop_when: Callable[[dict], bool] | None = None,
    seeds: Sequence[int] | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> tuple[TrainState, list[dict]]:
    """Run ``train_step`` until ``state.step == num_steps``, resuming from ``checkpointer``.

    The loop under ``attnjax.train.train`` (use that: it builds the state, the optimiser,
    the step and the checkpoints from a config, for several seeds at once); call this
    directly to drive a step of your own.

    Args:
      batch_at: the batch of a given step (a pure function of the step; see module doc).
      log: called with every metrics record (e.g. a JSON-lines writer).
      evaluate: ``evaluate(state) -> dict`` (or a list of dicts, one per seed) run every
        ``eval_every`` steps and at the end.
      tokens_in: counts the tokens of a batch, for the tokens/s throughput.
      stop_when: called with every training record; ``True`` stops early (the state is
        checkpointed at that step); with a seed axis, when it is true for every seed. A
        restarted run resumes from there and trains on until ``stop_when`` holds again, so
        early stopping is not part of the exact-resume promise.
      seeds: the state has a leading seed axis of these seeds (``train`` vmaps the step):
        every record is emitted once per seed, with ``"seed"``.
      on_resume: called once with the step the run starts from (0 for a fresh run), before
        any record is emitted: ``train`` drops the records after it from ``metrics.jsonl``.

    Raises:
      Interrupted: on Ctrl-C, after pending checkpoint writes finished (``.step`` is the
        step a rerun resumes from).

    Returns:
      ``(state, records)``, the records of this call (not of an earlier, resumed run).
    """
    if checkpointer is not None:
        state = checkpointer.restore_or(state)
    start = int(np.max(jax.device_get(state.step)))
    if on_resume is not None:
        on_resume(start)
    records: list[dict] = []
    tokens, tic, since = 0, time.perf_counter(), start

    def emit(record: dict | list[dict]) -> None:
        for r in record if isinstance(record, list) else [record]:
            records.append(r)
            if log is not None:
                log(r)

    def evaluation(step: int) -> list[dict]:
        out = evaluate(state)
        out = out if isinstance(out, list) else [out]
        return [{"step": step, "split": "eval", **r} for r in out]

    bar = tqdm(total=num_steps, initial=start, desc=description, disable=not progress)
    pending = None
    try:
        for step in range(start, num_steps):
            batch = batch_at(step)
            state, metrics = train_step(state, batch, base_key)
            if tokens_in is not None:
                tokens += tokens_in(batch)
            # Fetching metrics syncs with the device: accumulate on device, read once per log.
            pending = metrics if pending is None else jax.tree.map(jnp.add, pending, metrics)
            done = step + 1
            if done % log_every == 0 or done == num_steps:
                sums = {k: np.asarray(v) for k, v in jax.device_get(pending).items()}
                interval = _records(sums, done - since, time.perf_counter() - tic, done, seeds,
                                    tokens if tokens_in is not None else None)
                emit(interval)
                bar.set_postfix({"loss": f"{np.mean([r['loss'] for r in interval]):.4f}"})
                pending, tokens, tic, since = None, 0, time.perf_counter(), done
                if stop_when is not None and all(stop_when(r) for r in interval):
                    if checkpointer is not None:
                        checkpointer.save(done, state, force=True)
                    bar.update(1)
                    break
            if evaluate is not None and eval_every and done % eval_every == 0 and done != num_steps:
                emit(evaluation(done))
            if checkpointer is not None:
                checkpointer.save(done, state, force=done == num_steps)
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        resumes_from = None
        if checkpointer is not None:
            checkpointer.close()  # finishes a pending asynchronous save
            resumes_from = checkpointer.latest_step() or 0
        raise Interrupted(resumes_from) from None
    bar.close()
    if evaluate is not None and start < num_steps:
        emit(evaluation(num_steps))
    if checkpointer is not None:
        checkpointer.close()
    return state, records


def batches_of(arrays: dict[str, np.ndarray], batch_size: int) -> Iterable[Batch]:
    """Consecutive (unshuffled) batches, the last one possibly smaller: for evaluation."""
    n = len(next(iter(arrays.values())))
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in arrays.items()}
