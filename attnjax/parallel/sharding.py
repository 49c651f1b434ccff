"""Meshes, parameter shardings and the sharded training step (``jax.jit`` + ``NamedSharding``).

A ``("data", "model")`` mesh. The batch is split over ``"data"``. Parameters (and the
optimiser state, which mirrors them) are

* replicated (data parallel), or
* with ``fsdp=True``, each leaf sharded over ``"data"`` on its largest divisible axis
  (ZeRO-3 / FSDP style: XLA all-gathers a layer's weights where they are used and
  reduce-scatters their gradients), and/or
* with a ``"model"`` axis of size > 1, tensor parallel (Megatron-style): the heads of every
  attention projection and the hidden units of every MLP are split over ``"model"``, so a
  device computes ``H / model`` heads and XLA all-reduces after the output projections.

The step is ``train.make_train_step`` compiled once for those shardings: the loss is the
global loss, so the same global batch gives the same update as on one device. Every array
goes onto the mesh through ``put``, which builds global arrays from host values with
``jax.make_array_from_callback`` and therefore works unchanged with several processes
(``attnjax.parallel.distributed``): each process passes the same global value and only its
own shards are copied.
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

# Tensor-parallel rules: (name of the parameter's module, parameter) -> the axis to split over
# "model", counted from the end (heads of [D, H, Dh] projections, hidden units of MLPs).
_TP_AXIS: dict[tuple[str, str], int] = {
    ("query", "kernel"): -2, ("key", "kernel"): -2, ("value", "kernel"): -2,
    ("query", "bias"): -2, ("key", "bias"): -2, ("value", "bias"): -2,
    ("out", "kernel"): -3,  # [H, Dh, D]
    ("wi", "kernel"): -1, ("wi", "bias"): -1,  # [D, F], [F]
    ("wo", "kernel"): -2,  # [F, D]
}


def make_mesh(data: int | None = None, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, model)`` mesh over ``devices`` (default all devices of all processes;
    ``data`` default: all that ``model`` leaves)."""
    devices = list(jax.devices() if devices is None else devices)
    data = len(devices) // model if data is None else data
    if data < 1 or model < 1 or data * model > len(devices):
        hint = ("; on CPU, simulate devices with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N (set before JAX starts)"
                if devices and devices[0].platform == "cpu" else "")
        raise ValueError(f"make_mesh: data={data} x model={model} needs more than the "
                         f"{len(devices)} devices available{hint}")
    return Mesh(np.array(devices[: data * model]).reshape(data, model), ("data", "model"))


def _names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def param_spec(path, shape: tuple[int, ...], mesh: Mesh, *, fsdp: bool = False) -> P:
    """The ``PartitionSpec`` of one parameter (or optimiser-state leaf) at ``path``."""
    spec: list[str | None] = [None] * len(shape)
    model = mesh.shape.get("model", 1)
    names = _names(path)
    if model > 1 and len(names) >= 2:
        axis = _TP_AXIS.get((names[-2], names[-1]))
        if axis is not None and len(shape) >= -axis and shape[axis] % model == 0:
            spec[len(shape) + axis] = "model"
    data = mesh.shape.get("data", 1)
    if fsdp and data > 1:
        free = [a for a in range(len(shape)) if spec[a] is None and shape[a] % data == 0]
        if free:
            spec[max(free, key=lambda a: shape[a])] = "data"
    return P(*spec) if any(spec) else P()


def state_shardings(state: Any, mesh: Mesh, *, fsdp: bool = False) -> Any:
    """``NamedSharding`` of every leaf of ``state`` (a ``TrainState`` or any pytree of
    parameters): see the module docstring for the rules."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(mesh, param_spec(path, np.shape(x), mesh, fsdp=fsdp)),
        state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Examples (the leading axis) split over "data", replicated over "model"."""
    return NamedSharding(mesh, P("data"))


def put(tree: Any, shardings: Any) -> Any:
    """Place host values (numpy or single-device arrays, the same global value in every
    process) on the mesh as global ``jax.Array``s; ``shardings`` is one sharding or a tree
    of them matching ``tree``. Only the shards this process addresses are copied."""
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def one(x, sharding):
        x = np.asarray(x)
        # A copy per shard: on CPU a device buffer may alias host memory, and the train
        # step donates its state, so sharing memory with ``x`` (or between leaves made
        # from one buffer, like optimiser moments) would let one update overwrite another.
        return jax.make_array_from_callback(
            x.shape, sharding, lambda index: np.array(x[index], copy=True))

    return jax.tree.map(one, tree, shardings)


def sharded_step_function(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                          state: Any, mesh: Mesh, *, fsdp: bool = False
                          ) -> tuple[Any, Callable]:
    """``(state shardings, jitted step)``: the step of ``sharded_train_step`` before any
    placement or checks, for ``.lower(...)`` with ``jax.ShapeDtypeStruct`` arguments (e.g.
    to read its memory and communication with ``attnjax.parallel.measure``). The step
    donates its state argument (as ``train.make_train_step`` does)."""
    shardings = state_shardings(state, mesh, fsdp=fsdp)
    compiled = jax.jit(make_train_step(loss_fn, optimizer, jit=False),
                       in_shardings=(shardings, batch_sharding(mesh), NamedSharding(mesh, P())),
                       out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=0)
    return shardings, compiled


def sharded_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                       state: TrainState, mesh: Mesh, *, fsdp: bool = False
                       ) -> tuple[TrainState, Callable]:
    """``(state placed on the mesh, step)`` where ``step(state, batch, key)`` is the step of
    ``train.make_train_step`` compiled for the mesh. ``batch`` may be host arrays (each
    process passing the whole global batch; ``put`` places it) or already placed arrays.
    The global batch size must divide by ``mesh.shape["data"]``; with a "model" axis the
    number of heads (and MLP width) must divide by ``mesh.shape["model"]`` to be split
    (leaves that do not divide are replicated)."""
    shardings, compiled = sharded_step_function(loss_fn, optimizer, state, mesh, fsdp=fsdp)
    replicated = NamedSharding(mesh, P())
    batch_spec = batch_sharding(mesh)
    data = mesh.shape["data"]

    def step(state, batch, base_key):
        rows = {np.shape(x)[0] for x in jax.tree.leaves(batch)}
        if any(r % data for r in rows):
            raise ValueError(f"sharded_train_step: batch of {sorted(rows)} rows does not "
                             f"split over the {data} devices of mesh axis 'data'")
        if any(not isinstance(x, jax.Array) or x.sharding != batch_spec
               for x in jax.tree.leaves(batch)):
            batch = put(batch, batch_spec)
        if not isinstance(base_key, jax.Array) or base_key.sharding != replicated:
            if placed_key[0] is not base_key:  # fit passes the same key every step
                placed_key[:] = [base_key, _put_key(base_key, replicated)]
            base_key = placed_key[1]
        return compiled(state, batch, base_key)

    placed_key: list = [None, None]

    return put(state, shardings), step


def _put_key(key, sharding):
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(key)
        return jax.random.wrap_key_data(put(jax.random.key_data(key), sharding), impl=impl)
    return put(key, sharding)


def train_step_for(config: Any, loss_fn: LossFn, optimizer: optax.GradientTransformation,
                   state: TrainState) -> tuple[TrainState, Callable]:
    """The training step a config's ``parallel`` block asks for (``data``, ``model``,
    ``fsdp``; see ``parallel.default_config``): ``train.make_train_step`` on one device when
    ``data == model == 1`` and not ``fsdp``, else ``sharded_train_step`` on a
    ``make_mesh(data, model)`` (``data=0``: all devices ``model`` leaves)."""
    data, model = int(config.get("data", 1)), int(config.get("model", 1))
    fsdp = bool(config.get("fsdp", False))
    if data == 1 and model == 1 and not fsdp:
        return state, make_train_step(loss_fn, optimizer)
    mesh = make_mesh(data or None, model)
    return sharded_train_step(loss_fn, optimizer, state, mesh, fsdp=fsdp)
