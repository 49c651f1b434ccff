"""Does attention's cost grow quadratically with the sequence length?

Times single-device attention, B=1, H=8, D=64, float32, for a sweep of sequence lengths N,
forward and forward+backward (the gradients of ``sum(out * cotangent)`` w.r.t. q, k and v),
causal and not, for several implementations of the same function:

* ``naive``: einsum, softmax, einsum, written here; it holds the ``[B, H, N, N]`` weights;
* ``xla``: ``jax.nn.dot_product_attention(..., implementation="xla")``, the peer: every
  speed ratio is ``time_xla / time_impl`` from the same run (> 1: faster than jax.nn);
* ``flax``: ``flax.linen.dot_product_attention`` with a causal mask for causal rows;
* ``attnjax_xla``, ``attnjax_chunked``, ``attnjax_default``: ``attnjax.ops.dot_product_attention``
  with ``implementation="xla"``, ``"chunked"`` and None;
* ``torch``: ``torch.nn.functional.scaled_dot_product_attention`` on the CPU, if torch is
  installed (it is not a dependency), with as many threads as JAX's CPU client.

An implementation that raises while tracing (or whose import fails) is reported as
"unavailable" and the run goes on. Per row (implementation, N, mode, causal) the run
records compile time apart from the timed calls, best and median time per call, achieved
GFLOP/s and its share of a matmul ceiling (``jit(jnp.dot)`` of two float32 [2048, 2048]
measured in the same run), the peak resident memory the call added (``VmHWM`` after a reset
through ``/proc/self/clear_refs``, minus ``VmRSS`` before it) next to XLA's static estimate,
and the CPU time other processes used meanwhile (every tool is ``attnjax.bench``'s). All
implementations are measured at one N before the next N, so that drifting load on this
shared machine hits them alike; a row during which other processes used more than
``max_neighbour_cores`` is repeated and, if it stays disturbed, kept but left out of ratios
and fits.

FLOP convention (``attnjax.cost.attention_matmul_flops``): forward ``4 B H N^2 D`` (two
matmuls), forward+backward 3.5x that (seven N^2 D matmuls, counted as a flash-style
backward would); causal rows count the useful pairs, N(N+1)/2, although an implementation
that masks a full matrix does all of the work.

Intervals: each row keeps the seconds per call of every timed round; a time exponent's
interval resamples each length's rounds (``bench.slope_bootstrap``). A benchmark has no
seeds; the verdict counts fitted series ("k of n series") with ``seed_verdict``.

    python -m experiments.scaling [--config configs/scaling.py[:tour|:smoke]]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import flax.linen
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from attnjax import bench, cost, experiment, ops
from experiments import REGISTRY

NAME = "scaling"
CLAIM = REGISTRY[NAME].claim
PEER = "xla"
MODES = ("fwd", "fwd+bwd")
GIB = 2**30
# A row's status; only "ok" rows enter ratios and time fits ("disturbed" rows keep their
# memory, which neighbours do not change).
STATUSES = ("ok", "disturbed", "unavailable", "does not fit", "too slow", "error")
# Below this a peak-RSS increment understates what a call needs: glibc serves blocks under
# its mmap threshold (at most 32 MiB) from memory the process already holds. Memory
# exponents are fitted over larger peaks only.
RELIABLE_PEAK_BYTES = 32 * 2**20
RULE = (
    "Per (implementation, mode) series of {impls} (modes {modes}, causal {causal}): the "
    "log-log slope of the {statistic} time per call vs N over the undisturbed rows with "
    "N >= {fit_min_length} (at least two lengths of {lengths}); a series passes if the "
    "slope is in [{lo}, {hi}] (doubling N roughly quadruples the time). The claim holds if "
    ">= {holds_at:.0%} of the fitted series pass, does not hold if <= {fails_at:.0%} do, "
    "mixed otherwise; mixed if no series could be fitted."
)


def rule(config: ml_collections.ConfigDict) -> str:
    lo, hi = config.quadratic_exponent_range
    return RULE.format(impls=", ".join(config.impls), modes=", ".join(config.modes),
                       causal=tuple(config.causal), statistic=config.statistic,
                       fit_min_length=config.fit_min_length, lengths=tuple(config.lengths),
                       lo=lo, hi=hi, holds_at=config.verdict.holds_at,
                       fails_at=config.verdict.fails_at)


# --------------------------------------------------------------------------- implementations


def naive_attention(query, key, value, is_causal: bool):
    """``softmax(q k^T / sqrt(D)) v`` written out: the textbook version that materialises
    the ``[B, H, N, N]`` logits and weights, as the baseline every library improves on."""
    logits = jnp.einsum("bthd,bshd->bhts", query, key) / math.sqrt(query.shape[-1])
    if is_causal:
        n = query.shape[1]
        logits = jnp.where(jnp.tril(jnp.ones((n, n), bool)), logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhts,bshd->bthd", weights, value)


def _jax_nn(query, key, value, is_causal: bool):
    return jax.nn.dot_product_attention(
        query, key, value, is_causal=is_causal, implementation="xla"
    )


def _flax(query, key, value, is_causal: bool):
    mask = None
    if is_causal:
        mask = flax.linen.make_causal_mask(jnp.ones(query.shape[:2], jnp.int32))
    return flax.linen.dot_product_attention(query, key, value, mask=mask, deterministic=True)


def _attnjax(query, key, value, is_causal: bool, implementation: str | None):
    return ops.dot_product_attention(
        query, key, value, is_causal=is_causal, implementation=implementation
    )


JAX_IMPLS: dict[str, Callable] = {
    "naive": naive_attention,
    "xla": _jax_nn,
    "flax": _flax,
    "attnjax_xla": functools.partial(_attnjax, implementation="xla"),
    "attnjax_chunked": functools.partial(_attnjax, implementation="chunked"),
    "attnjax_default": functools.partial(_attnjax, implementation=None),
}
IMPLS = (*JAX_IMPLS, "torch")


class Unavailable(Exception):
    """An implementation that cannot run here: it raised while tracing, or its import failed."""


@dataclasses.dataclass
class Prepared:
    """A compiled row: ``call()`` runs it once and blocks until its outputs exist."""

    call: Callable[[], object]
    compile_seconds: float
    xla_memory: dict | None  # XLA's static buffer sizes, bytes (JAX implementations only)


class Inputs:
    """q, k, v and the cotangent, ``[B, N, H, D]`` float32, and their torch copies."""

    def __init__(self, config: ml_collections.ConfigDict, length: int, num_heads: int):
        shape = (config.batch_size, length, num_heads, config.head_dim)
        keys = jax.random.split(jax.random.key(config.seed), 4)
        self.jax = tuple(jax.block_until_ready(jax.random.normal(k, shape)) for k in keys)
        self.nbytes = sum(x.nbytes for x in self.jax)
        self._torch = None

    def torch(self):
        if self._torch is None:  # torch's layout is [B, H, N, D]
            torch = _import_torch()
            self._torch = tuple(
                torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 2, 1, 3)))
                for x in self.jax
            )
        return self._torch


def _import_torch():
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means "not here"
        raise Unavailable(f"import torch failed: {type(e).__name__}: {e}") from None
    return torch


def prepare_jax(impl: str, mode: str, causal: bool, inputs: Inputs) -> Prepared:
    attention = JAX_IMPLS[impl]
    query, key, value, cotangent = inputs.jax
    if mode == "fwd":
        args = (query, key, value)

        def fn(query, key, value):
            return attention(query, key, value, causal)
    else:
        args = (query, key, value, cotangent)

        def fn(query, key, value, cotangent):
            loss = lambda q, k, v: jnp.sum(attention(q, k, v, causal) * cotangent)
            return jax.grad(loss, argnums=(0, 1, 2))(query, key, value)

    tic = time.perf_counter()
    try:
        lowered = jax.jit(fn).lower(*args)
    except Exception as e:  # noqa: BLE001 - whatever the tracer refuses
        raise Unavailable(f"{type(e).__name__}: {e}") from None
    compiled = lowered.compile()
    compile_seconds = time.perf_counter() - tic
    return Prepared(
        call=lambda: jax.block_until_ready(compiled(*args)),
        compile_seconds=compile_seconds,
        xla_memory=bench.xla_memory(compiled),
    )


def prepare_torch(mode: str, causal: bool, inputs: Inputs, threads: int) -> Prepared:
    torch = _import_torch()
    torch.set_num_threads(threads)
    attention = torch.nn.functional.scaled_dot_product_attention
    query, key, value, cotangent = inputs.torch()
    if mode == "fwd":

        def call():
            with torch.no_grad():  # like a JAX forward: no residuals kept for a backward
                return attention(query, key, value, is_causal=causal)
    else:
        leaves = tuple(x.clone().requires_grad_() for x in (query, key, value))

        def call():
            out = attention(*leaves, is_causal=causal)
            return torch.autograd.grad(out, leaves, grad_outputs=cotangent)

    return Prepared(call=call, compile_seconds=0.0, xla_memory=None)  # eager: no compile


def prepare(impl, mode, causal, inputs, threads) -> Prepared:
    if impl == "torch":
        return prepare_torch(mode, causal, inputs, threads)
    return prepare_jax(impl, mode, causal, inputs)


# --------------------------------------------------------------------------- measurements


def flops(config, length: int, num_heads: int, mode: str, causal: bool) -> int:
    """Useful matmul FLOPs of one call (``attnjax.cost.attention_matmul_flops``)."""
    return cost.attention_matmul_flops(length, heads=num_heads, head_dim=config.head_dim,
                                       batch=config.batch_size, causal=causal,
                                       backward=mode == "fwd+bwd")


def naive_bytes(config, length: int, num_heads: int, mode: str) -> int:
    """Score buffers of implementations that hold float32 ``[B, H, N, N]`` matrices
    (``attnjax.cost.naive_score_bytes``)."""
    return cost.naive_score_bytes(length, heads=num_heads, batch=config.batch_size,
                                  backward=mode == "fwd+bwd")


def environment(config, threads: int) -> dict:
    """``bench.environment`` plus torch's version and threads when torch is measured."""
    env = {**bench.environment(threads), "torch": None}
    if "torch" in config.impls:
        try:
            torch = _import_torch()
            torch.set_num_threads(threads)
            env["torch"] = torch.__version__
            env["torch_threads"] = torch.get_num_threads()
        except Unavailable as e:
            env["torch"] = str(e)
    return env


def matmul_ceiling(config) -> dict:
    return bench.matmul_ceiling(config.matmul_size, seed=config.seed, **bench.timing(config))


# --------------------------------------------------------------------------- the sweep


@dataclasses.dataclass(frozen=True)
class Group:
    """One sequence length: the rows measured together, before the next length."""

    length: int
    num_heads: int
    impls: tuple[str, ...]
    modes: tuple[str, ...]


def plan(config) -> list[Group]:
    groups = [Group(n, config.num_heads, tuple(config.impls), tuple(config.modes))
              for n in config.lengths]
    long_impls = tuple(i for i in config.impls if i in config.long_impls)
    if long_impls:
        groups += [Group(n, config.num_heads, long_impls, tuple(config.modes))
                   for n in config.long_lengths]
        if config.long_forward_length:
            groups.append(Group(config.long_forward_length, config.long_forward_heads,
                                long_impls, ("fwd",)))
    # Rotate the order of the implementations from one length to the next, so that none
    # always runs right after another's worker threads.
    return [dataclasses.replace(g, impls=g.impls[i % len(g.impls):] + g.impls[:i % len(g.impls)])
            for i, g in enumerate(groups)]


def series_key(row: dict) -> tuple:
    return row["impl"], row["mode"], row["causal"], row["num_heads"]


def variant_name(mode: str, causal: bool) -> str:
    return f"{mode}/causal" if causal else mode


def _predicted_seconds(history: list[dict], length: int, num_heads: int) -> float | None:
    """Time per call extrapolated quadratically from the series' last measured row."""
    timed = [r for r in history if r.get("seconds") is not None]
    if not timed:
        return None
    last = timed[-1]
    return last["seconds"] * (length / last["length"]) ** 2 * num_heads / last["num_heads"]


def _footprint(row: dict) -> float | None:
    """Bytes a row needs: the peak it added plus its inputs, which existed before it, and
    at least what XLA's buffer assignment allocates (an RSS increment understates a call
    that reuses pages the process kept from an earlier row: in one full run, jax.nn causal
    forward at N=8192 added 0.5 GB where its siblings added 4.8 GB)."""
    if row.get("peak_rss_increment_bytes") is None:
        return None
    measured = row["peak_rss_increment_bytes"] + row["input_bytes"]
    static = (row.get("xla_memory") or {}).get("total_bytes", 0)
    return max(measured, static)


def _predicted_bytes(mode, length, num_heads, prepared, history, config) -> tuple[float, str]:
    """Peak bytes expected for a row, and where the prediction comes from: XLA's buffer
    assignment for JAX, else the series' measured peaks as a power law (exponent clipped to
    [1, 2]), else the naive formula."""
    if prepared.xla_memory is not None:
        return prepared.xla_memory["total_bytes"], "xla memory_analysis"
    measured = [r for r in history if _footprint(r) is not None]
    if not measured:
        return naive_bytes(config, length, num_heads, mode), "naive formula"
    first, last = measured[-2:] if len(measured) > 1 else (measured[0], measured[0])
    p = 2.0
    if last["length"] > first["length"]:
        p = math.log(_footprint(last) / _footprint(first)) / math.log(
            last["length"] / first["length"])
        p = min(max(p, 1.0), 2.0)
    scale = (length / last["length"]) ** p * num_heads / last["num_heads"]
    return _footprint(last) * scale, "extrapolated from measured peaks"


def measure_row(impl, mode, causal, group: Group, inputs: Inputs, history, config,
                threads: int) -> dict:
    """One row: compile, check it fits, warm up, peak memory, timed rounds."""
    length, num_heads = group.length, group.num_heads
    work = flops(config, length, num_heads, mode, causal)
    row = {"impl": impl, "length": length, "num_heads": num_heads, "mode": mode,
           "causal": causal, "status": "ok", "reason": None, "flops": work,
           "input_bytes": inputs.nbytes if mode == "fwd+bwd" else inputs.nbytes * 3 // 4,
           "seconds": None}
    predicted = _predicted_seconds(history, length, num_heads)
    if predicted is not None and predicted > config.max_call_seconds:
        return {**row, "status": "too slow",
                "reason": f"predicted {predicted:.0f} s per call > {config.max_call_seconds} s"}
    try:
        prepared = prepare(impl, mode, causal, inputs, threads)
    except Unavailable as e:
        return {**row, "status": "unavailable", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - a failed compile must not end the sweep
        return {**row, "status": "error", "reason": f"{type(e).__name__}: {e}"}
    row.update(compile_seconds=prepared.compile_seconds, xla_memory=prepared.xla_memory)
    expected, source = _predicted_bytes(mode, length, num_heads, prepared, history, config)
    row.update(predicted_bytes=expected, predicted_bytes_from=source)
    if expected > config.memory_limit_gib * GIB:
        return {**row, "status": "does not fit",
                "reason": f"predicted {expected / GIB:.1f} GiB ({source}) > "
                          f"{config.memory_limit_gib} GiB"}
    try:
        tic = time.perf_counter()
        prepared.call()
        row["first_call_seconds"] = time.perf_counter() - tic
        row["peak_rss_increment_bytes"] = bench.peak_rss_increment(prepared.call)
        # The whole process's resident peak during that call (since the reset above).
        row["process_peak_bytes"] = bench.status_bytes("VmHWM")
        row.update(bench.time_calls(prepared.call, **bench.timing(config)))
    except Exception as e:  # noqa: BLE001 - e.g. an allocation failure at run time
        return {**row, "status": "error", "reason": f"{type(e).__name__}: {e}"}
    if row.pop("disturbed"):
        row["status"] = "disturbed"
        row["reason"] = (f"other processes used {row['neighbour_cores']:.2f} cores "
                         f"> {config.max_neighbour_cores}")
    row["seconds"] = row["seconds_best" if config.statistic == "best" else "seconds_median"]
    row["gflop_per_second"] = work / row["seconds"] / 1e9
    return row


def _check_config(config) -> None:
    unknown = [i for i in config.impls if i not in IMPLS]
    if unknown:
        raise ValueError(f"config.impls: unknown {unknown}; choose from {IMPLS}")
    bad_modes = [m for m in config.modes if m not in MODES]
    if bad_modes:
        raise ValueError(f"config.modes: unknown {bad_modes}; choose from {MODES}")
    if PEER not in config.impls:
        raise ValueError(f"config.impls must include the peer {PEER!r}: ratios are against it")
    if config.statistic not in ("best", "median"):
        raise ValueError(f"config.statistic must be 'best' or 'median', got {config.statistic!r}")


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """The sweep (one length at a time, every implementation at it), the matmul ceiling
    before and after it, the environment, and everything fitted from the rows."""
    _check_config(config)
    groups = plan(config)
    total = sum(len(g.impls) * len(g.modes) * len(config.causal) for g in groups)
    ceiling = matmul_ceiling(config)
    threads = config.torch_threads or bench.jax_cpu_threads()
    env = environment(config, threads)
    rows: list[dict] = []
    progress = tqdm(total=total, desc=NAME, unit="row")
    for group in groups:
        inputs = Inputs(config, group.length, group.num_heads)
        for mode in group.modes:
            for causal in config.causal:
                block = []
                for impl in group.impls:
                    progress.set_postfix_str(
                        f"N={group.length} {variant_name(mode, causal)} {impl}")
                    history = [r for r in rows if series_key(r)[:3] == (impl, mode, causal)]
                    block.append(measure_row(impl, mode, causal, group, inputs, history, config,
                                             threads))
                    progress.update()
                    time.sleep(config.settle_seconds)
                _add_ratios(block)
                for row in block:
                    run_dir.log(row)
                rows += block
        del inputs
    progress.close()
    # Measured before and after the sweep; the faster of the two is the ceiling, since a
    # neighbour can only have slowed it down.
    ceilings = [ceiling, matmul_ceiling(config)]
    best = max(c["gflop_per_second"] for c in ceilings)
    for row in rows:
        if row.get("gflop_per_second") is not None:
            row["percent_of_ceiling"] = 100.0 * row["gflop_per_second"] / best
    return {
        "environment": env,
        "matmul_ceiling": {"gflop_per_second": best, "size": config.matmul_size,
                           "flops": 2.0 * config.matmul_size**3, "start_of_run": ceilings[0],
                           "end_of_run": ceilings[1]},
        **summarise(rows, config),
    }


def _add_ratios(block: list[dict]) -> None:
    """``speedup_vs_xla = time_xla / time_impl`` for the rows of one (N, mode, causal)."""
    peer = next((r for r in block if r["impl"] == PEER and r["status"] == "ok"), None)
    for row in block:
        ok = peer is not None and row["status"] == "ok"
        row["speedup_vs_xla"] = peer["seconds"] / row["seconds"] if ok else None


# --------------------------------------------------------------------------- analysis


def summarise(rows: list[dict], config) -> dict:
    """The rows and everything fitted from them (no figures, no verdict)."""
    return {
        "rows": rows,
        "fitted_exponent": fitted_exponents(rows, config),
        # For a machine that was never quiet: the same fits with the disturbed rows in.
        "fitted_exponent_including_disturbed": fitted_exponents(rows, config,
                                                                ("ok", "disturbed")),
        "exponent_interval": exponent_intervals(rows, config),
        "exponent_interval_including_disturbed": exponent_intervals(rows, config,
                                                                    ("ok", "disturbed")),
        "memory_exponent": memory_exponents(rows, config),
        "speedup_vs_xla": speedup_summary(rows, config),
        "fits_in_machine_memory": fits_in_memory(rows, config),
        "status_counts": {s: sum(r["status"] == s for r in rows) for s in STATUSES},
    }


def _series(rows: list[dict], config) -> dict[tuple, list[dict]]:
    """Rows of the main sweep (H = config.num_heads) by (impl, mode, causal), by length."""
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["num_heads"] == config.num_heads:
            out.setdefault(series_key(row)[:3], []).append(row)
    return out


def fitted_exponents(rows, config, statuses=("ok",)) -> dict:
    """``{impl: {variant: {"n_ge_<min>": fit, "all": fit}}}``: slope of log time vs log N
    over the rows whose status is in ``statuses``."""
    out: dict = {}
    for (impl, mode, causal), series in _series(rows, config).items():
        points = [(r["length"], r["seconds"]) for r in series if r["status"] in statuses]
        long = [(n, s) for n, s in points if n >= config.fit_min_length]
        out.setdefault(impl, {})[variant_name(mode, causal)] = {
            f"n_ge_{config.fit_min_length}": bench.power_law_fit(long),
            "all": bench.power_law_fit(points)}
    return out


def exponent_intervals(rows, config, statuses=("ok",)) -> dict:
    """``{impl: {variant: {"mean", "ci95", "points"} | None}}``: the time exponent over the
    undisturbed rows with N >= fit_min_length and its 95% interval from resampling each
    length's timed rounds (``bench.slope_bootstrap``, same statistic as the fits); over the
    rows whose status is in ``statuses``."""
    out: dict = {}
    for (impl, mode, causal), series in _series(rows, config).items():
        long = [r for r in series if r["status"] in statuses
                and r["length"] >= config.fit_min_length
                and r.get("round_seconds")]
        fit = None
        if len({r["length"] for r in long}) >= 2:
            fit = bench.slope_bootstrap([r["length"] for r in long],
                                        [r["round_seconds"] for r in long],
                                        statistic=config.statistic)
        out.setdefault(impl, {})[variant_name(mode, causal)] = fit
    return out


def memory_exponents(rows, config) -> dict:
    """Slope of log(peak bytes: increment + inputs) vs log N, like ``fitted_exponents``,
    over the rows whose peak is at least ``RELIABLE_PEAK_BYTES``."""
    out: dict = {}
    for (impl, mode, causal), series in _series(rows, config).items():
        points = [(r["length"], _footprint(r)) for r in series
                  if _footprint(r) is not None and _footprint(r) >= RELIABLE_PEAK_BYTES]
        long = [(n, b) for n, b in points if n >= config.fit_min_length]
        out.setdefault(impl, {})[variant_name(mode, causal)] = {
            f"n_ge_{config.fit_min_length}": bench.power_law_fit(long),
            "all": bench.power_law_fit(points)}
    return out


def speedup_summary(rows, config) -> dict:
    """Per implementation and variant: the geometric mean of time_xla / time_impl over N
    and its value at the largest N both were measured at."""
    out: dict = {}
    for (impl, mode, causal), series in _series(rows, config).items():
        ratios = [(r["length"], r["speedup_vs_xla"]) for r in series
                  if r.get("speedup_vs_xla") is not None]
        summary = None
        if ratios:
            summary = {"geometric_mean": float(np.exp(np.mean(np.log([x for _, x in ratios])))),
                       "at_largest_length": ratios[-1][1], "largest_length": ratios[-1][0],
                       "lengths": len(ratios)}
        out.setdefault(impl, {})[variant_name(mode, causal)] = summary
    return out


def fits_in_memory(rows, config) -> dict:
    """The largest N whose peak (increment + inputs) fits in ``machine_memory_gib``.

    Beyond the largest measured N it is extrapolated from the last two measured rows as a
    power law and marked so; the exponent is clipped to [1, 2], since attention holds at most
    a few N x N matrices, and small-N increments are understated (see memory_exponents).
    """
    limit = config.machine_memory_gib * GIB
    out: dict = {}
    for (impl, mode, causal), series in _series(rows, config).items():
        measured = [(r["length"], _footprint(r)) for r in series if _footprint(r) is not None]
        entry = None
        if measured:
            fitting = [n for n, f in measured if f <= limit]
            entry = {"max_length": max(fitting) if fitting else None, "extrapolated": False,
                     "largest_measured_length": measured[-1][0],
                     "peak_bytes_at_largest": measured[-1][1]}
            if len(measured) > 1 and measured[-1][1] <= limit:
                (n1, f1), (n2, f2) = measured[-2:]
                p = min(max(math.log(f2 / f1) / math.log(n2 / n1), 1.0), 2.0)
                estimate = n2 * (limit / f2) ** (1.0 / p)
                if estimate > n2:
                    entry.update(max_length=int(estimate), extrapolated=True,
                                 exponent_used=p, from_lengths=[n1, n2])
        out.setdefault(impl, {})[variant_name(mode, causal)] = entry
    return out


def _doubling_factor(rows, config, impl=PEER, mode="fwd+bwd", causal=False) -> float | None:
    """Median of time(2N) / time(N) over consecutive measured N >= fit_min_length."""
    series = _series(rows, config).get((impl, mode, causal), [])
    times = {r["length"]: r["seconds"] for r in series
             if r["status"] == "ok" and r["length"] >= config.fit_min_length}
    factors = [times[2 * n] / times[n] for n in times if 2 * n in times]
    return float(np.median(factors)) if factors else None


def verdict(numbers: dict, config) -> dict:
    """The pre-registered ``RULE`` applied to ``measure``'s numbers: each fitted series
    passes or not, ``seed_verdict`` counts them."""
    lo, hi = config.quadratic_exponent_range
    key = f"n_ge_{config.fit_min_length}"
    fits = [(impl, variant, f[key]) for impl, variants in numbers["fitted_exponent"].items()
            for variant, f in variants.items() if f[key] is not None]
    rows = numbers["rows"]
    disturbed = numbers["status_counts"]["disturbed"]
    note_disturbed = f"; {disturbed} disturbed rows left out" if disturbed else ""
    if not fits:
        anyway = [f[key]["exponent"] for v in numbers["fitted_exponent_including_disturbed"]
                  .values() for f in v.values() if f[key] is not None]
        hint = (f" (with them the exponents would be {min(anyway):.2f}-{max(anyway):.2f})"
                if anyway else "")
        return {"checks": {},
                "measured": f"no implementation had two undisturbed lengths >= "
                            f"{config.fit_min_length} to fit{note_disturbed}{hint}",
                "verdict": "mixed: nothing could be fitted: other processes loaded the "
                           "machine during the rows (see neighbour_cores)"}
    exponents = {f"{impl} {variant}": f["exponent"] for impl, variant, f in fits}
    inside = {k: e for k, e in exponents.items() if lo <= e <= hi}
    outside = {k: e for k, e in exponents.items() if k not in inside}
    n_lo = min(f["min_length"] for *_, f in fits)
    n_hi = max(f["max_length"] for *_, f in fits)

    peer = numbers["exponent_interval"].get(PEER, {})
    peer_text = ", ".join(f"N^{p['mean']:.2f} [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] {v}"
                          for v, p in peer.items() if p is not None)
    parts = [f"over N={n_lo}-{n_hi} (B={config.batch_size}, H={config.num_heads}, "
             f"D={config.head_dim}, fp32, {numbers['environment']['jax_cpu_threads']} CPU "
             f"threads) time grows as " + (f"{peer_text} for jax.nn (xla); " if peer_text else "")
             + f"{len(inside)}/{len(exponents)} implementation/mode series have exponents in "
             f"[{lo}, {hi}] (all: {min(exponents.values()):.2f}-{max(exponents.values()):.2f})"]
    doubling = _doubling_factor(rows, config)
    if doubling is not None:
        parts.append(f"doubling N multiplied jax.nn's fwd+bwd time by {doubling:.2f}x (median)")
    memory = {impl: m["fwd+bwd"][key] for impl, m in numbers["memory_exponent"].items()
              if m.get("fwd+bwd") and m["fwd+bwd"][key] is not None}
    mem_text = [f"{impl} N^{m['exponent']:.2f}" for impl, m in memory.items()]
    if mem_text:
        parts.append("fwd+bwd peak memory grows as " + ", ".join(mem_text))
    best = max((r for r in rows if r["status"] == "ok"), key=lambda r: r["percent_of_ceiling"],
               default=None)
    if best is not None:
        parts.append(f"best row {best['percent_of_ceiling']:.0f}% of the "
                     f"{numbers['matmul_ceiling']['gflop_per_second']:.0f} GFLOP/s matmul "
                     f"ceiling ({best['impl']} {variant_name(best['mode'], best['causal'])} "
                     f"N={best['length']})")
    measured = "; ".join(parts) + note_disturbed

    cls, count = experiment.seed_verdict([k in inside for k in exponents],
                                         holds_at=config.verdict.holds_at,
                                         fails_at=config.verdict.fails_at)
    count = count.replace("seeds", "series")
    reasons = [f"holds in {count}: time exponents over N={n_lo}-{n_hi} in [{lo}, {hi}]"]
    if peer_text:
        reasons.append(f"jax.nn (xla) {peer_text}")
    if outside:
        def listed(names):
            return ", ".join(f"{k} N^{outside[k]:.2f}" for k in sorted(names)[:4])

        above = [k for k, e in outside.items() if e > hi]
        below = [k for k, e in outside.items() if e < lo]
        if above:
            reasons.append(f"{len(above)} grow faster than N^{hi} ({listed(above)}): doubling "
                           "the tokens quadruples the work, and more than quadruples the time "
                           "of the implementations whose N x N scores leave the cache")
        if below:
            reasons.append(f"{len(below)} grow slower than N^{lo} ({listed(below)}): fixed "
                           "costs dominate at these lengths")
    # Said only where the same run also saw a quadratic peak, so that noise cannot say it.
    sub_quadratic_memory = {impl: m["exponent"] for impl, m in memory.items()
                            if m["exponent"] < 1.5}
    if sub_quadratic_memory and any(m["exponent"] >= lo for m in memory.values()):
        reasons.append("the memory need not grow so: peak memory grows as " + ", ".join(
            f"N^{e:.2f} for {impl}" for impl, e in sub_quadratic_memory.items()))
    checks = {"exponents": exponents, "quadratic_range": [lo, hi],
              "fwd_bwd_doubling_factor_xla": doubling}
    return {"checks": checks, "measured": measured,
            "verdict": f"{cls}: " + "; ".join(reasons) + note_disturbed}


def metrics(numbers: dict, config) -> dict:
    """Every fitted series' time exponent with its interval over the timed rounds
    (``time_exponent/<impl> <variant>``), and the share of series in the quadratic range.
    When no undisturbed series could be fitted, the same exponents over the disturbed rows
    too (``time_exponent_including_disturbed/...``; the verdict does not use them)."""
    out = {}
    fitted = any(f is not None for v in numbers["exponent_interval"].values()
                 for f in v.values())
    source, prefix = ((numbers["exponent_interval"], "time_exponent") if fitted else
                      (numbers["exponent_interval_including_disturbed"],
                       "time_exponent_including_disturbed"))
    for impl, variants in source.items():
        for variant, fit in variants.items():
            if fit is not None:
                out[f"{prefix}/{impl} {variant}"] = {"mean": fit["mean"], "ci95": fit["ci95"],
                                                     "lengths": fit["points"]}
    exponents = verdict(numbers, config)["checks"].get("exponents", {})
    if exponents:
        lo, hi = config.quadratic_exponent_range
        share = float(np.mean([lo <= e <= hi for e in exponents.values()]))
        out["quadratic_series_share"] = {"mean": share, "ci95": [share, share],
                                         "series": len(exponents), "exact": True}
    return out


def headline(metrics: dict) -> list[str]:
    wanted = [f"time_exponent/{PEER} fwd+bwd", f"time_exponent/{PEER} fwd",
              "quadratic_series_share", f"time_exponent_including_disturbed/{PEER} fwd+bwd",
              f"time_exponent_including_disturbed/{PEER} fwd"]
    return [name for name in wanted if name in metrics] or list(metrics)[:1]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    judged = verdict(numbers, config)
    scores = metrics(numbers, config)
    if not scores:  # nothing fitted: the contract still needs a record
        scores = {"fitted_series": {"mean": 0.0, "ci95": [0.0, 0.0], "exact": True}}
    results = {**numbers, "claim": CLAIM, "rule": rule(config), **judged, "seeds": [],
               "metrics": scores, "headline": headline(scores), "published": [],
               "figures": plot(numbers, config, run_dir)}
    print(table(results, config))
    return results


# --------------------------------------------------------------------------- output


def _panels(rows, config, run_dir, name: str, value, ylabel: str, logy: bool,
            reference: bool, hline: float | None = None, dotted=None) -> str:
    """One 2x2 figure: rows fwd / fwd+bwd, columns full / causal; one line per impl, and
    ``dotted(row)`` as a thin dotted line of the same colour if given."""
    series = _series(rows, config)
    figure = Figure(figsize=(12, 8.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(MODES), 2, squeeze=False)
    colors = {impl: f"C{i}" for i, impl in enumerate(IMPLS)}
    for i, mode in enumerate(MODES):
        for j, causal in enumerate((False, True)):
            ax = axes[i][j]
            for impl in config.impls:
                points = [(r["length"], value(r), r["status"])
                          for r in series.get((impl, mode, causal), []) if value(r) is not None]
                if not points:
                    continue
                lengths, values, statuses = zip(*points, strict=True)
                ax.plot(lengths, values, "-", color=colors[impl], label=impl)
                for n, v, s in points:  # hollow markers: disturbed rows
                    ax.plot(n, v, "o", color=colors[impl],
                            mfc=colors[impl] if s == "ok" else "none")
                if dotted is not None:
                    extra = [(r["length"], dotted(r)) for r in series[(impl, mode, causal)]
                             if dotted(r) is not None]
                    if extra:
                        ax.plot(*zip(*extra, strict=True), ":", color=colors[impl], lw=1)
            if reference:
                _reference_line(ax, series.get((PEER, mode, causal), []), value)
            if hline is not None:
                ax.axhline(hline, color="k", lw=0.8, ls=":", label="machine memory")
            ax.set(xscale="log", yscale="log" if logy else "linear", xlabel="sequence length N",
                   ylabel=ylabel, title=f"{mode}{', causal' if causal else ''}")
            ax.set_xscale("log", base=2)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    figure.suptitle(f"B={config.batch_size}, H={config.num_heads}, D={config.head_dim}, "
                    f"float32 (hollow: disturbed by other processes)")
    figure.tight_layout()
    path = run_dir.figure_path(name)
    figure.savefig(path, dpi=100)
    return path.name


def _reference_line(ax, peer_rows, value) -> None:
    points = [(r["length"], value(r)) for r in peer_rows if value(r) is not None]
    if not points:
        return
    n0, v0 = points[-1]
    lengths = np.array([points[0][0], n0], float)
    ax.plot(lengths, v0 * (lengths / n0) ** 2, "k--", lw=1, alpha=0.6, label="∝ N² (at xla)")


def plot(numbers, config, run_dir) -> list[str]:
    rows = numbers["rows"]
    mib = lambda r: _footprint(r) / 2**20 if _footprint(r) is not None else None
    return [
        _panels(rows, config, run_dir, "scaling_time",
                lambda r: r["seconds"] * 1e3 if r.get("seconds") else None,
                f"{config.statistic} time per call (ms)", logy=True, reference=True),
        _panels(rows, config, run_dir, "scaling_memory", mib,
                "peak memory: RSS increment + inputs (MiB)\n(dotted: XLA's static estimate)",
                logy=True, reference=True, hline=config.machine_memory_gib * 1024,
                dotted=lambda r: r["xla_memory"]["total_bytes"] / 2**20
                if r.get("xla_memory") else None),
        _panels(rows, config, run_dir, "scaling_efficiency",
                lambda r: r.get("percent_of_ceiling"), "% of matmul ceiling",
                logy=False, reference=False),
    ]


_SHORT = {"unavailable": "n/a", "does not fit": "no fit", "too slow": "slow", "error": "error"}


def table(results, config) -> str:
    """Compact text table: per length and variant, ms per call and speed-up vs xla."""
    rows = results["rows"]
    impls = [i for i in config.impls if any(r["impl"] == i for r in rows)]
    width = 17
    lines = [f"{'N':>7} {'H':>2} {'variant':<15}" + "".join(f"{i:>{width}}" for i in impls)]
    keys = dict.fromkeys((r["length"], r["num_heads"], r["mode"], r["causal"]) for r in rows)
    for n, h, mode, causal in keys:
        cells = []
        for impl in impls:
            row = next((r for r in rows if (r["impl"], r["length"], r["num_heads"], r["mode"],
                                            r["causal"]) == (impl, n, h, mode, causal)), None)
            if row is None:
                cells.append("")
            elif row["seconds"] is None:
                cells.append(_SHORT.get(row["status"], row["status"]))
            else:
                ratio = row.get("speedup_vs_xla")
                cells.append(f"{row['seconds'] * 1e3:.4g}ms"
                             + ("*" if row["status"] == "disturbed" else "")
                             + (f" {ratio:.2f}x" if ratio is not None else ""))
        lines.append(f"{n:>7} {h:>2} {variant_name(mode, causal):<15}"
                     + "".join(f"{c:>{width}}" for c in cells))
    key = f"n_ge_{config.fit_min_length}"
    lines.append(f"time exponents over N >= {config.fit_min_length}:")
    for impl, variants in results["fitted_exponent"].items():
        text = "  ".join(f"{v} {f[key]['exponent']:.2f}" for v, f in variants.items()
                         if f[key] is not None)
        lines.append(f"  {impl:<16} {text or '-'}")
    ceiling = results["matmul_ceiling"]
    lines.append(f"matmul ceiling {ceiling['gflop_per_second']:.1f} GFLOP/s "
                 f"(start {ceiling['start_of_run']['gflop_per_second']:.1f}, "
                 f"end {ceiling['end_of_run']['gflop_per_second']:.1f}); "
                 "ms = time per call, x = time_xla / time_impl, * = disturbed")
    return "\n".join(lines)


if __name__ == "__main__":
    experiment.main(NAME, run)
