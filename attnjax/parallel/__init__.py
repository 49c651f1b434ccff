"""Training on more than one device with JAX's own runtime (Step 7, in progress).

* ``make_mesh``: a ``("data", "model")`` device mesh;
* ``state_shardings``: replicated parameters and optimiser state (data parallel) or each
  leaf sharded over ``"data"`` on its largest divisible axis (FSDP-style);
* ``sharded_train_step``: ``train.make_train_step`` jitted with those shardings and the
  batch split over ``"data"``, so XLA inserts the gradient all-reduce (or the FSDP
  all-gathers and reduce-scatters) itself. The same global batch gives the same updates as
  on one device.

Sequence parallelism is ``attnjax.ops.ring_attention``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from attnjax.train.loop import LossFn, TrainState, make_train_step


def make_mesh(data: int | None = None, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default all; ``data`` default: all that
    ``model`` leaves)."""
    devices = list(jax.devices() if devices is None else devices)
    data = len(devices) // model if data is None else data
    if data < 1 or model < 1 or data * model > len(devices):
        raise ValueError(f"make_mesh: data={data} x model={model} needs more than the "
                         f"{len(devices)} devices available")
    return Mesh(np.array(devices[: data * model]).reshape(data, model), ("data", "model"))


def _fsdp_spec(shape: tuple[int, ...], n: int) -> P:
    """Shard the largest axis divisible by ``n`` over "data"; replicate if none is."""
    axes = sorted(range(len(shape)), key=lambda a: -shape[a])
    for axis in axes:
        if shape[axis] % n == 0 and shape[axis] >= n:
            spec = [None] * len(shape)
            spec[axis] = "data"
            return P(*spec)
    return P()


def state_shardings(state: Any, mesh: Mesh, *, fsdp: bool = False) -> Any:
    """NamedShardings for every leaf of ``state`` (a ``TrainState`` or any pytree)."""
    n = mesh.shape["data"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, _fsdp_spec(np.shape(x), n) if fsdp else P()), state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Examples (the leading axis) split over "data"."""
    return NamedSharding(mesh, P("data"))


def sharded_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                       state: TrainState, mesh: Mesh, *, fsdp: bool = False
                       ) -> tuple[TrainState, Callable]:
    """``(state placed on the mesh, step)`` where ``step(state, batch, key)`` is the training
    step of ``train.make_train_step`` compiled for the mesh. Batches are placed with
    ``batch_sharding`` (their leading size must divide by ``mesh.shape["data"]``)."""
    shardings = state_shardings(state, mesh, fsdp=fsdp)
    step = jax.jit(make_train_step(loss_fn, optimizer, jit=False),
                   in_shardings=(shardings, batch_sharding(mesh), None),
                   out_shardings=(shardings, None), donate_argnums=0)
    return jax.device_put(state, shardings), step
