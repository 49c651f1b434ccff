"""The trainer: one entry point from a config to trained parameters, for several seeds at
once.

    result = train.train(
        name="transformer", seeds=(0, 1, 2), config=config.train,
        init=lambda key: model.init(key, example)["params"],
        loss_fn=loss_fn,                         # (params, batch, dropout_key) -> (loss, sums)
        batches=lambda rngs, step: batch_of(rngs, step),
        run_dir=run_dir,
    )
    result.params[i]       # the parameters of seed result.seeds[i]
    result.history(seed)   # its metrics.jsonl records, resumed runs included

What it does, in order: derive every random number of a seed from the seed (``SeedRngs``:
initialisation, dropout, data draw and data order are separate streams of one seed), build
the optimiser from the config (``make_optimizer``), initialise, build the step
(``parallel.train_step_for``: one device or a mesh), restore orbax checkpoints, run the loop
(``fit``), write ``metrics.jsonl`` records tagged ``run`` and ``seed``.

The seed axis. Small models leave most of a CPU idle, so by default the S seeds (and any
learning rates of a sweep) are trained *as one program*: ``jax.vmap`` over the stacked
initial parameters, optimiser states, data and dropout keys, one compilation, one step for
all members (the JAX way to get error bars). Each member follows the loss curve it has when
trained alone (within 1e-5: the batched matmuls sum in another order, and Adam turns such
float noise in near-zero gradients into parameter differences of up to ~lr, so parameters
agree to ~lr, not bitwise). Where the stacked program does not fit in memory, or a
mesh is asked for, members are trained one after another with the same numbers. Resume
works per run: the stacked state is one checkpoint; looped members have one each.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnjax.train.loop import Checkpointer, TrainState, fit, make_train_step
from attnjax.train.optim import make_optimizer

Batch = dict[str, np.ndarray]

# Fields a train config block may have (``configs/common.py: train_block``).
TRAIN_FIELDS = ("num_steps", "learning_rate", "warmup_steps", "schedule", "weight_decay",
                "clip_norm", "b1", "b2", "log_every", "checkpoint_every")


class SeedRngs(NamedTuple):
    """Every random number a run uses, derived from one seed. Streams are independent by
    name: ``key("init")`` initialises, ``key("dropout")`` is the base dropout key (folded
    with the step), ``numpy("data_order")`` orders batches, ``numpy("data_draw")`` samples a
    synthetic data set. Changing the seed changes all of them; changing nothing keeps the
    numbers identical on CPU."""

    seed: int

    @staticmethod
    def _stream(name: str) -> int:
        return zlib.crc32(name.encode()) & 0x7FFFFFFF

    def key(self, name: str) -> jax.Array:
        """A ``jax.random`` key of stream ``name``."""
        return jax.random.fold_in(jax.random.key(self.seed), self._stream(name))

    def numpy(self, name: str) -> np.random.Generator:
        """A NumPy generator of stream ``name`` (fresh each call: same draws each time)."""
        return np.random.default_rng([self.seed, self._stream(name)])

    def int(self, name: str) -> int:
        """An integer seed of stream ``name`` (for helpers that take ``seed: int``)."""
        return int(self.numpy(name).integers(0, 2**31 - 1))


@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a (vmapped) group: a seed and the peak learning rate it trains with."""

    seed: int
    learning_rate: float

    @property
    def tag(self) -> str:
        return f"seed{self.seed}-lr{self.learning_rate:g}"


class _LearningRateState(NamedTuple):
    learning_rate: jax.Array


def _scale_by_member_learning_rate() -> optax.GradientTransformation:
    """Multiplies updates by a learning rate held in the optimiser *state*, so that members
    of a vmapped group can train with different peak learning rates in one program."""

    def init(params):
        del params
        return _LearningRateState(jnp.ones((), jnp.float32))

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: u * state.learning_rate.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def check_train_config(config: Mapping) -> None:
    """Fails early on a train block that cannot mean what it says.

    Raises:
      ValueError: ``num_steps < 1``, ``warmup_steps`` outside ``[0, num_steps]``, a
        non-positive learning rate or logging/checkpoint interval.
    """
    steps = int(config["num_steps"])
    if steps < 1:
        raise ValueError(f"train.num_steps must be >= 1, got {steps}")
    warmup = int(config.get("warmup_steps", 0))
    if not 0 <= warmup <= steps:
        raise ValueError(
            f"train.warmup_steps={warmup} must be in [0, train.num_steps={steps}]: the "
            "schedule would never reach its peak learning rate"
        )
    if float(config["learning_rate"]) <= 0:
        raise ValueError(f"train.learning_rate must be > 0, got {config['learning_rate']}")
    for field in ("log_every", "checkpoint_every"):
        if field in config and int(config[field]) < 1:
            raise ValueError(f"train.{field} must be >= 1, got {config[field]}")


def optimizer_from_config(config: Mapping, *, unit_learning_rate: bool = False
                          ) -> optax.GradientTransformation:
    """AdamW with warmup, schedule, weight decay and clipping from a train block.

    ``unit_learning_rate=True`` builds the schedule with peak 1 and appends a per-member
    learning-rate scale held in the state (for vmapped learning-rate sweeps); AdamW's
    decoupled weight decay is scaled by the learning rate, as in ``optax.adamw``.
    """
    check_train_config(config)
    lr = 1.0 if unit_learning_rate else float(config["learning_rate"])
    optimizer = make_optimizer(
        lr, warmup_steps=int(config.get("warmup_steps", 0)),
        total_steps=int(config["num_steps"]), schedule=config.get("schedule", "cosine"),
        weight_decay=float(config.get("weight_decay", 0.0)),
        clip_norm=config.get("clip_norm", 1.0), b1=float(config.get("b1", 0.9)),
        b2=float(config.get("b2", 0.98)),
    )
    if unit_learning_rate:
        optimizer = optax.chain(optimizer, _scale_by_member_learning_rate())
    return optimizer


def _set_member_learning_rates(opt_state, learning_rates: jax.Array):
    """Writes ``learning_rates [S]`` into the stacked optimiser state's scale leaves."""
    is_scale = lambda x: isinstance(x, _LearningRateState)
    return jax.tree.map(
        lambda x: _LearningRateState(learning_rates) if is_scale(x) else x,
        opt_state, is_leaf=is_scale,
    )


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """``[S, B, ...]`` arrays from one batch per member; arrays whose trailing shapes
    differ (length buckets) are zero-padded on the right to the largest (0 = padding)."""
    out = {}
    for name in batches[0]:
        arrays = [np.asarray(b[name]) for b in batches]
        shape = np.max([a.shape for a in arrays], axis=0)
        arrays = [a if tuple(a.shape) == tuple(shape) else
                  np.pad(a, [(0, int(m - n)) for n, m in zip(a.shape, shape, strict=True)])
                  for a in arrays]
        out[name] = np.stack(arrays)
    return out


def _available_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def num_params(params: Any) -> int:
    """Number of scalars in a parameter tree (of one member)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
      name: the run name (``run`` field of its records, its checkpoint folder).
      members: one ``Member`` (seed, learning rate) per trained run, in order.
      params: the trained parameters of each member (not stacked).
      final: per member, the last training record (loss, accuracy, steps).
      seconds: wall time of the whole call (compilation included).
      vmapped: whether the members trained as one vmapped program.
      num_params: parameters of one member.
      records: every ``metrics.jsonl``-style record of this call and, with a run folder,
        of the earlier calls it resumed (the full history).
    """

    name: str
    members: list[Member]
    params: list[Any]
    final: list[dict]
    seconds: float
    vmapped: bool
    num_params: int
    records: list[dict]

    @property
    def seeds(self) -> list[int]:
        return [m.seed for m in self.members]

    def history(self, seed: int, learning_rate: float | None = None,
                split: str | None = None) -> list[dict]:
        """The records of one member, in step order."""
        return [r for r in self.records if r.get("seed") == seed
                and (learning_rate is None or r.get("learning_rate") == learning_rate)
                and (split is None or r.get("split") == split)]

    def member_params(self, seed: int, learning_rate: float | None = None) -> Any:
        for m, p in zip(self.members, self.params, strict=True):
            if m.seed == seed and (learning_rate is None or m.learning_rate == learning_rate):
                return p
        raise KeyError(f"no member with seed={seed}, learning_rate={learning_rate}")


def train(
    *,
    name: str,
    seeds: Sequence[int],
    config: Mapping,
    init: Callable[[jax.Array], Any],
    loss_fn: Callable,
    batches: Callable[[SeedRngs, int], Batch],
    run_dir=None,
    parallel: Mapping | None = None,
    learning_rates: Sequence[float] | None = None,
    vmap_seeds: bool | str = "auto",
    evaluate: Callable[[Any, Member], dict] | None = None,
    eval_every: int = 0,
    tokens_in: Callable[[Batch], int] | None = None,
    stop_when: Callable[[dict], bool] | None = None,
    progress: bool = True,
    memory_fraction: float = 0.5,
    checkpoint_dir: str | Path | None = None,
    log: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Trains one model for each seed (x learning rate), resumably; see the module doc.

    Args:
      name: the run's name: ``"run"`` of its records and ``<run_dir>/checkpoints/<name>/``.
      seeds: the seeds; each varies initialisation, data draw and data order.
      config: the train block (``num_steps``, ``learning_rate``, ``warmup_steps``,
        ``schedule``, ``weight_decay``, ``clip_norm``, ``log_every``, ``checkpoint_every``;
        ``configs/common.py``).
      init: ``init(key) -> params`` of one member (traced under ``vmap`` for a group).
      loss_fn: ``loss_fn(params, batch, dropout_key) -> (loss, sums)`` (see
        ``make_train_step``); ``sums`` may hold ``loss_sum``, ``weight_sum``,
        ``correct_sum``.
      batches: ``batches(rngs, step) -> batch`` of one member: a pure function of the seed's
        streams and the step (exact resumption rests on it).
      run_dir: an ``attnjax.experiment.RunDir`` for records and checkpoints, or None (no
        checkpoints, records only returned).
      parallel: a ``parallel`` config block (``data``, ``model``, ``fsdp``): with more than
        one device the members train one after another on the mesh.
      learning_rates: peak learning rates to sweep (every seed with every rate, one vmapped
        group); default ``(config.learning_rate,)``.
      vmap_seeds: ``True``, ``False`` or ``"auto"`` (vmapped unless a mesh is used or the
        compiled group needs more than ``memory_fraction`` of the available memory).
      evaluate: ``evaluate(params, member) -> dict`` of one member, every ``eval_every``
        steps and at the end (records with ``split="eval"``).
      tokens_in: tokens of one member's batch, for tokens/s.
      stop_when: early stop when it is true of a training record (for every member).
      checkpoint_dir: where checkpoints go without a run folder (default with one:
        ``<run_dir>/checkpoints/<name>/``; without either, no checkpoints).
      log: also called with every record (after ``run_dir`` wrote it).

    Returns:
      a ``TrainResult``.
    """
    check_train_config(config)
    if not seeds:
        raise ValueError("`seeds` is empty: train at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` has repeats: {list(seeds)}")
    # Configs hold "auto"/"true"/"false" (a str field, so --config.vmap_seeds=false works).
    if isinstance(vmap_seeds, str) and vmap_seeds.lower() in ("true", "1", "false", "0"):
        vmap_seeds = vmap_seeds.lower() in ("true", "1")
    if vmap_seeds not in (True, False, "auto"):
        raise ValueError(f"`vmap_seeds` must be True, False or 'auto', got {vmap_seeds!r}")
    rates = [float(config["learning_rate"])] if learning_rates is None else \
        [float(r) for r in learning_rates]
    members = [Member(int(s), r) for r in rates for s in seeds]
    sweep = learning_rates is not None
    parallel = parallel or {}
    on_mesh = int(parallel.get("data", 1)) != 1 or int(parallel.get("model", 1)) != 1 or \
        bool(parallel.get("fsdp", False))
    tic = time.perf_counter()
    vmapped = False
    if vmap_seeds is not False and not on_mesh and len(members) > 1:
        group = _VmappedGroup(name, members, config, init, loss_fn, batches, sweep)
        vmapped = vmap_seeds is True or group.fits(memory_fraction)
        if not vmapped:
            print(f"{name}: {len(members)} vmapped runs need "
                  f"{group.bytes / 2**30:.1f} GiB; training them one after another")
    elif vmap_seeds is True and on_mesh:
        raise ValueError("vmap_seeds=True cannot be combined with a device mesh "
                         f"(parallel={dict(parallel)}); use 'auto' or False")

    def logger(tags: Callable[[dict], dict]):
        def write(record: dict) -> None:
            record = {"run": name, **tags(record)}
            if run_dir is not None:
                run_dir.log(record)
            if log is not None:
                log(record)
        return write if (run_dir is not None or log is not None) else None

    root = None
    if checkpoint_dir is not None:
        root = Path(checkpoint_dir)
    elif run_dir is not None:
        root = Path(run_dir.path) / "checkpoints" / name

    def dropper(group_members: list[Member]):
        keys = {(m.seed, m.learning_rate) for m in group_members}

        def on_resume(start: int) -> None:
            if run_dir is None:
                return
            run_dir.drop_records(lambda r: r.get("run") == name
                                 and (r.get("seed"), r.get("learning_rate", rates[0])) in keys
                                 and r.get("step", math.inf) > start)
        return on_resume

    def tag(record: dict, member: Member) -> dict:
        return {**record, "seed": member.seed, "learning_rate": member.learning_rate}

    all_records: list[dict] = []
    if vmapped:
        by_seed = dict(enumerate(members))
        checkpointer = None
        if root is not None:
            checkpointer = Checkpointer(root / _group_dir(members),
                                        every=int(config.get("checkpoint_every", 500)))

        def evaluate_group(state) -> list[dict]:
            out = []
            for i, m in enumerate(members):
                params = jax.tree.map(lambda x, i=i: x[i], state.params)
                out.append(tag(evaluate(params, m), m))
            return out

        # fit tags records with "seed" = the member index; map it back to the member.
        def member_tags(record: dict) -> dict:
            if record.get("split") == "train":
                m = by_seed[record["seed"]]
                return tag(record, m)
            return record

        state, records = fit(
            group.state(), group.step, group.batch_at, num_steps=int(config["num_steps"]),
            base_key=group.dropout_keys, log=logger(member_tags),
            log_every=int(config.get("log_every", 50)),
            evaluate=evaluate_group if evaluate is not None else None, eval_every=eval_every,
            checkpointer=checkpointer,
            tokens_in=None if tokens_in is None else group.tokens_in(tokens_in),
            progress=progress, description=f"{name} x{len(members)}",
            stop_when=stop_when, seeds=list(range(len(members))),
            on_resume=dropper(members),
        )
        all_records = [member_tags(r) for r in records]
        params = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), state.params)
                  for i in range(len(members))]
    else:
        params = []
        for m in members:
            rngs = SeedRngs(m.seed)
            optimizer = optimizer_from_config({**dict(config), "learning_rate": m.learning_rate})
            p0 = jax.jit(init)(rngs.key("init"))
            from attnjax.parallel import train_step_for  # parallel imports train

            state, step = train_step_for(parallel, loss_fn, optimizer,
                                         TrainState.create(p0, optimizer))
            checkpointer = None
            if root is not None:
                checkpointer = Checkpointer(root / _group_dir([m]),
                                            every=int(config.get("checkpoint_every", 500)))
            state, records = fit(
                state, step, lambda s, rngs=rngs: batches(rngs, s),
                num_steps=int(config["num_steps"]), base_key=rngs.key("dropout"),
                log=logger(lambda r, m=m: tag(r, m)),
                log_every=int(config.get("log_every", 50)),
                evaluate=None if evaluate is None else
                (lambda st, m=m: evaluate(st.params, m)),
                eval_every=eval_every, checkpointer=checkpointer, tokens_in=tokens_in,
                progress=progress,
                description=f"{name} seed {m.seed}" + (f" lr {m.learning_rate:g}" if sweep else ""),
                stop_when=stop_when, on_resume=dropper([m]),
            )
            all_records += [tag(r, m) for r in records]
            params.append(jax.device_get(state.params))
    if run_dir is not None:
        keys = {(m.seed, m.learning_rate) for m in members}
        all_records = [r for r in run_dir.records() if r.get("run") == name
                       and (r.get("seed"), r.get("learning_rate")) in keys]
    final = []
    for m in members:
        trained = [r for r in all_records if r.get("split") == "train"
                   and r.get("seed") == m.seed and r.get("learning_rate") == m.learning_rate]
        final.append(trained[-1] if trained else {})
    return TrainResult(name=name, members=members, params=params, final=final,
                       seconds=time.perf_counter() - tic, vmapped=vmapped,
                       num_params=num_params(params[0]), records=all_records)


def _group_dir(members: Sequence[Member]) -> str:
    """Checkpoint folder of a group: its members, so a changed seed list never restores a
    state of another shape."""
    text = "_".join(m.tag for m in members)
    if len(text) > 120:
        text = f"{len(members)}runs-{zlib.crc32(text.encode()):08x}"
    return text


class _VmappedGroup:
    """The stacked state, step and batches of members trained as one vmapped program."""

    def __init__(self, name, members, config, init, loss_fn, batches, sweep):
        self.members = members
        self.rngs = [SeedRngs(m.seed) for m in members]
        self.batches = batches
        self.optimizer = optimizer_from_config(config, unit_learning_rate=True)
        self.dropout_keys = jnp.stack([r.key("dropout") for r in self.rngs])
        init_keys = [r.key("init") for r in self.rngs]
        optimizer = self.optimizer
        # One jitted init per member (the same compiled program), stacked, rather than
        # jit(vmap(init)): with jax 0.10.2 on CPU, running the vmapped init of flax's LSTM
        # and GRU-with-attention seq2seq modules never returns (compiles, then blocks).
        # Initialisation is a small part of a run, and the numbers are the same.
        init_one = jax.jit(init)

        @jax.jit
        def stacked_state(params, learning_rates):
            state = jax.vmap(lambda p: TrainState.create(p, optimizer))(params)
            return state.replace(opt_state=_set_member_learning_rates(state.opt_state,
                                                                      learning_rates))

        def stacked_init():
            params = jax.tree.map(lambda *xs: jnp.stack(xs), *[init_one(k) for k in init_keys])
            return stacked_state(
                params, jnp.asarray([m.learning_rate for m in members], jnp.float32))

        self._init = stacked_init
        step = make_train_step(loss_fn, optimizer, jit=False)
        self.step = jax.jit(jax.vmap(step), donate_argnums=0)
        self.bytes = None

    def state(self) -> TrainState:
        return self._init()

    def batch_at(self, step: int) -> Batch:
        return stack_batches([self.batches(r, step) for r in self.rngs])

    def tokens_in(self, count: Callable[[Batch], int]) -> Callable[[Batch], int]:
        return lambda stacked: sum(
            count({k: v[i] for k, v in stacked.items()}) for i in range(len(self.members)))

    def fits(self, fraction: float) -> bool:
        """Whether the compiled group step needs at most ``fraction`` of free memory."""
        from attnjax.parallel.measure import memory

        state = jax.eval_shape(self._init)
        available = _available_memory_bytes()
        state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
        # Compiling only to measure costs seconds: small groups (the usual case) skip it.
        if available is None or 4 * state_bytes < 0.01 * available:
            return True
        batch = self.batch_at(0)
        try:
            compiled = self.step.lower(state, batch, self.dropout_keys).compile()
            self.bytes = memory(compiled)["total_bytes"]
        except Exception:  # no memory analysis on this backend: assume it fits
            return True
        return self.bytes <= fraction * available
