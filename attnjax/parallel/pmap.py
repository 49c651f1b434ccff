"""The classic ``jax.pmap`` data-parallel step, for code that still uses it.

``jax.jit`` with shardings (``attnjax.parallel.sharded_train_step``) is the recommended path;
this is the same step written the older way: the state is replicated with a leading device
axis, each device takes ``B / n`` examples, and gradients are combined with collectives over
``axis_name``.

Exactness: a loss that is a weighted mean (``loss = loss_sum / weight_sum``, with
``weight_sum`` among the returned sums, as every attnjax loss) is combined as
``sum_i(w_i * loss_i) / sum_i(w_i)`` and likewise its gradients, which is exactly the loss of
the global batch; without ``weight_sum`` every device counts equally (``pmean``). Dropout
keys are ``fold_in(fold_in(base_key, step), device index)``: each device draws its own mask,
so with dropout the update is not bit-for-bit that of one device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from attnjax.train.loop import Batch, LossFn, TrainState


def replicate(tree: Any, devices: list[jax.Device] | None = None) -> Any:
    """``tree`` with a leading axis of one copy per (local) device, for ``pmap``."""
    devices = list(devices or jax.local_devices())
    sharding = NamedSharding(Mesh(np.array(devices), ("replica",)), P("replica"))
    return jax.tree.map(lambda x: jax.device_put(
        np.broadcast_to(np.asarray(x), (len(devices), *np.shape(x))), sharding), tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated tree."""
    return jax.tree.map(lambda x: x[0], tree)


def shard_batch(batch: Batch, num_devices: int | None = None) -> Batch:
    """``[B, ...]`` arrays reshaped to ``[n, B / n, ...]`` for ``pmap``."""
    n = num_devices or jax.local_device_count()

    def split(x):
        x = np.asarray(x)
        if x.shape[0] % n:
            raise ValueError(f"shard_batch: batch of {x.shape[0]} rows does not split over "
                             f"{n} devices")
        return x.reshape(n, x.shape[0] // n, *x.shape[1:])

    return jax.tree.map(split, batch)


def pmap_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                    axis_name: str = "data") -> Callable:
    """``step(replicated_state, sharded_batch, base_key) -> (replicated_state, metrics)``,
    ``pmap``-ed over the local devices; metrics are replicated (take ``[0]``).

    Use with ``replicate(state)`` and ``shard_batch(batch)``. The step donates its state
    argument (as ``train.make_train_step`` does): the replicated state passed in is deleted.
    """

    def step(state: TrainState, batch: Batch, base_key: jax.Array):
        key = jax.random.fold_in(jax.random.fold_in(base_key, state.step),
                                 jax.lax.axis_index(axis_name))
        (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, key)
        weight = sums.get("weight_sum", jnp.ones((), loss.dtype))
        total = jax.lax.psum(weight, axis_name)
        grads = jax.tree.map(lambda g: jax.lax.psum(g * weight, axis_name) / total, grads)
        loss = jax.lax.psum(loss * weight, axis_name) / total
        sums = jax.lax.psum(sums, axis_name)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**sums, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.pmap(step, axis_name=axis_name, in_axes=(0, 0, None), donate_argnums=0)
