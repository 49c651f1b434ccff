"""Training and attention on more than one device, with JAX's own runtime.

* ``make_mesh``: a ``("data", "model")`` device mesh;
* ``state_shardings`` / ``param_spec``: data parallel (replicated), FSDP (``fsdp=True``:
  each leaf sharded over ``"data"``) and tensor-parallel heads and MLP units over
  ``"model"``;
* ``sharded_train_step``: ``train.make_train_step`` jitted with those shardings; the same
  global batch gives the same updates as on one device; ``train_step_for(config.parallel,
  ...)`` picks it (or the plain one-device step) from a config;
* ``measure``: per-device memory and collective bytes of a compiled program;
* ``put``: host values onto the mesh as global arrays (works with several processes);
* ``pmap_train_step`` with ``replicate`` / ``unreplicate`` / ``shard_batch``: the classic
  ``pmap`` data-parallel step;
* ``initialize`` and ``python -m attnjax.parallel.launch``: several processes on one
  machine (``jax.distributed`` with a localhost coordinator, gloo CPU collectives);
* ``python -m attnjax.parallel.check``: a tiny LM's loss curve under any layout.

Sequence parallelism is ``attnjax.ops.ring_attention``.
"""

import ml_collections

from attnjax.parallel import measure
from attnjax.parallel.distributed import initialize, launch
from attnjax.parallel.pmap import pmap_train_step, replicate, shard_batch, unreplicate
from attnjax.parallel.sharding import (
    batch_sharding,
    make_mesh,
    param_spec,
    put,
    sharded_step_function,
    sharded_train_step,
    state_shardings,
    train_step_for,
)


def default_config() -> ml_collections.ConfigDict:
    """The ``parallel`` block of a training config: one device unless overridden, e.g.
    ``--config.parallel.data=8`` (all 8 simulated CPU devices must exist: set
    ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before starting)."""
    return ml_collections.ConfigDict({"data": 1, "model": 1, "fsdp": False})


__all__ = [
    "batch_sharding",
    "default_config",
    "initialize",
    "launch",
    "make_mesh",
    "measure",
    "param_spec",
    "pmap_train_step",
    "put",
    "replicate",
    "shard_batch",
    "sharded_step_function",
    "sharded_train_step",
    "state_shardings",
    "train_step_for",
    "unreplicate",
]
