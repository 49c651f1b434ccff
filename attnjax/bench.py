"""The measurement harness of the benchmarks: timing, load, memory, ceilings, fits.

Every timed experiment (``experiments/scaling``, ``parallelism``, ``scale_out``) and
``benchmarks/*`` measure with these, so that one machine's numbers mean the same thing
everywhere:

* ``NeighbourLoad``: CPU time that *other* processes used while a measurement ran, in cores
  (system-wide busy jiffies from ``/proc/stat`` minus this process's CPU time). On a shared
  machine a row measured next to a busy neighbour is repeated or marked disturbed.
* ``seconds_per_call`` / ``time_calls``: rounds of calls, each round
  repeating the call for at least ``min_seconds``; ``time_calls`` keeps every round's
  seconds per call (``round_seconds``), retries a disturbed measurement and reports best and
  median.
* ``peak_rss_increment``: the peak resident memory a call adds (``VmHWM`` after a reset
  through ``/proc/self/clear_refs``, minus ``VmRSS`` before it).
* ``xla_memory``: XLA's static buffer sizes of a compiled program
  (``attnjax.parallel.measure.memory``), or None where the backend reports none.
* ``matmul_ceiling``: GFLOP/s of ``jit(jnp.dot)`` on two float32 ``[M, M]``.
* ``jax_cpu_threads`` and ``environment``: what the numbers were measured on.
* ``loglog_slope`` (the one log-log fit), ``power_law_fit`` (with its support) and
  ``slope_bootstrap``/``repeat_summary``: intervals by resampling the timed rounds
  (``attnjax.stats`` percentile bootstrap).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnjax import stats

# The config fields ``time_calls`` reads (``timing(config)`` picks those present).
TIMING_FIELDS = ("repeats", "min_seconds", "min_row_seconds", "max_neighbour_cores",
                 "max_retries")


# --------------------------------------------------------------------------- load


def jiffies() -> int:
    """Busy CPU time of the whole machine (all processes), in kernel ticks."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    # steal: time the hypervisor gave to other guests, which also slows this process down.
    return user + nice + system + irq + softirq + steal


class NeighbourLoad:
    """Context manager: CPU time other processes used while it was open, in cores.

    System-wide busy time from ``/proc/stat`` minus this process's own CPU time, over the
    wall time. ``/proc/stat`` counts 10 ms ticks, so windows well over 0.1 s are needed.
    ``cores`` is set on exit (a float >= 0).
    """

    cores: float | None = None

    def __enter__(self):
        self._start = (jiffies(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc):
        ticks, own, wall = jiffies(), time.process_time(), time.perf_counter()
        system = (ticks - self._start[0]) / os.sysconf("SC_CLK_TCK")
        other = system - (own - self._start[1])
        self.cores = max(0.0, other / max(wall - self._start[2], 1e-9))
        return False


# --------------------------------------------------------------------------- timing


def seconds_per_call(call: Callable[[], Any], min_seconds: float) -> float:
    """Seconds per call of one round: ``call()`` repeated until ``min_seconds`` passed
    (at least once). ``call`` must block until its result exists."""
    n, tic = 0, time.perf_counter()
    while True:
        call()
        n += 1
        elapsed = time.perf_counter() - tic
        if elapsed >= min_seconds:
            return elapsed / n


def time_calls(call: Callable[[], Any], *, repeats: int = 3, min_seconds: float = 0.02,
               min_row_seconds: float = 0.0, max_neighbour_cores: float = float("inf"),
               max_retries: int = 0) -> dict:
    """Rounds of ``seconds_per_call`` under a ``NeighbourLoad`` monitor.

    Rounds go on until there are ``repeats`` of them and they took ``min_row_seconds``
    (so that the load estimate, read from 10 ms ticks, means something). A measurement
    during which neighbours used more than ``max_neighbour_cores`` is retried up to
    ``max_retries`` times; the last attempt is reported.

    Returns:
      ``{"round_seconds": [...], "seconds_best", "seconds_median", "rounds",
      "neighbour_cores", "neighbour_cores_attempts", "attempts", "disturbed"}``.
    """
    loads = []
    for _ in range(1 + max_retries):
        rounds: list[float] = []
        with NeighbourLoad() as load:
            deadline = time.perf_counter() + min_row_seconds
            while len(rounds) < repeats or time.perf_counter() < deadline:
                rounds.append(seconds_per_call(call, min_seconds))
        loads.append(round(load.cores, 3))
        if load.cores <= max_neighbour_cores:
            break
    return {
        "round_seconds": rounds,
        "seconds_best": float(np.min(rounds)),
        "seconds_median": float(np.median(rounds)),
        "rounds": len(rounds),
        "neighbour_cores": loads[-1],
        "neighbour_cores_attempts": loads,
        "attempts": len(loads),
        "disturbed": loads[-1] > max_neighbour_cores,
    }


def timing(config: Mapping) -> dict:
    """The ``time_calls`` keyword arguments a config sets (fields ``TIMING_FIELDS``)."""
    return {name: config[name] for name in TIMING_FIELDS if name in config}


# --------------------------------------------------------------------------- memory


def status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ...) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # "VmHWM:   12345 kB"
    return None


def peak_rss_increment(call: Callable[[], Any]) -> int | None:
    """Peak resident memory ``call()`` adds over what the process holds before it, bytes.

    Writing 5 to ``/proc/self/clear_refs`` resets the kernel's high-water mark ``VmHWM`` to
    the current ``VmRSS``; None where that is not possible.
    """
    # No gc.collect() here: outputs of earlier calls are freed by reference counting, and a
    # full collection in a long-lived process (the tour) costs more than the row.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    baseline = status_bytes("VmRSS")
    call()
    peak = status_bytes("VmHWM")
    if baseline is None or peak is None:
        return None
    # The high-water mark starts at the RSS of the reset; a page freed by another thread
    # between the reset and the VmRSS read could make the difference slightly negative.
    return max(peak - baseline, 0)


def xla_memory(compiled) -> dict | None:
    """XLA's buffer sizes of a compiled program (``parallel.measure.memory``: argument,
    output, temp and total bytes), or None where the backend does not report them."""
    from attnjax.parallel import measure

    try:
        return measure.memory(compiled)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


# --------------------------------------------------------------------------- machine


def matmul_ceiling(size: int = 2048, *, seed: int = 0, **timing_kwargs) -> dict:
    """GFLOP/s of ``jit(jnp.dot)`` on two float32 ``[size, size]``: what this CPU's matmul
    reaches (best round of ``time_calls(**timing_kwargs)``)."""
    import jax

    a, b = jax.random.normal(jax.random.key(seed), (2, size, size))
    dot = jax.jit(jax.numpy.dot).lower(a, b).compile()
    call = lambda: jax.block_until_ready(dot(a, b))  # noqa: E731
    call()
    timed = time_calls(call, **timing_kwargs)
    seconds = timed["seconds_best"]
    return {"size": size, "seconds": seconds, "gflop_per_second": 2.0 * size**3 / seconds / 1e9,
            "neighbour_cores": timed["neighbour_cores"]}


def jax_cpu_threads() -> int:
    """Threads of XLA's CPU intra-op (Eigen) pool, counted in /proc; the schedulable core
    count (what XLA sizes the pool by) if none is found."""
    tasks = Path("/proc/self/task")
    try:
        names = [(t / "comm").read_text() for t in tasks.iterdir()]
    except OSError:
        names = []
    count = sum("XLAEigen" in name for name in names)
    return count or len(os.sched_getaffinity(0))


def _first(path: str, prefix: str) -> str | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(prefix)),
                None)


def environment(threads: int | None = None) -> dict:
    """Versions, devices, CPU model, memory, core and thread counts, ``XLA_FLAGS``."""
    import flax
    import jax
    import jaxlib

    return {
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "cpu": _first("/proc/cpuinfo", "model name"), "memory": _first("/proc/meminfo", "MemTotal"),
        "os_cpu_count": os.cpu_count(), "schedulable_cores": len(os.sched_getaffinity(0)),
        "jax_cpu_threads": jax_cpu_threads() if threads is None else threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average": list(os.getloadavg()),
    }


# --------------------------------------------------------------------------- fits


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` vs ``log x``: the exponent p of ``y ~ x^p``."""
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"need two 1-D sequences of >= 2 equal lengths, got {x.shape}, {y.shape}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("a log-log fit needs positive values")
    if np.unique(x).size < 2:
        raise ValueError(f"a log-log fit needs two distinct x values, got {x.tolist()}")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def power_law_fit(points: Sequence[tuple[float, float]]) -> dict | None:
    """``{"exponent", "min_length", "max_length", "points"}`` of ``loglog_slope`` over
    ``(x, y)`` points, or None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    xs, ys = zip(*points, strict=True)
    return {"exponent": loglog_slope(xs, ys), "min_length": min(xs), "max_length": max(xs),
            "points": len(points)}


def _reduce(name: str) -> Callable[[np.ndarray], np.ndarray]:
    reducers = {"best": np.min, "median": np.median, "mean": np.mean}
    if name not in reducers:
        raise ValueError(f"statistic must be one of {tuple(reducers)}, got {name!r}")
    return reducers[name]


def repeat_summary(round_seconds: Sequence[float], statistic: str = "mean", **kwargs) -> dict:
    """``{"per_repeat": [...], "mean": x, "ci95": [lo, hi]}`` of timed rounds: ``mean`` is
    the ``statistic`` (``best``/``median``/``mean``) of the rounds, ``ci95`` its percentile
    bootstrap over the rounds (``stats.bootstrap_ci``)."""
    reduce = _reduce(statistic)
    values = np.asarray(round_seconds, np.float64)
    lo, hi = stats.bootstrap_ci(values, lambda r: reduce(r, axis=-1), **kwargs)
    return {"per_repeat": values.tolist(), "mean": float(reduce(values)), "ci95": [lo, hi]}


def slope_bootstrap(xs: Sequence[float], rounds: Sequence[Sequence[float]], *,
                    statistic: str = "best", num_resamples: int = 2000,
                    seed: int = 0) -> dict:
    """The log-log slope of ``statistic(rounds[i])`` vs ``xs[i]`` and its 95% interval
    from resampling each x's timed rounds (a percentile bootstrap over the repeats).

    Returns:
      ``{"mean": slope of the point estimates, "ci95": [lo, hi], "points": len(xs)}``.
    """
    if len(xs) != len(rounds) or len(xs) < 2:
        raise ValueError(f"need >= 2 x values, each with its rounds; got {len(xs)} and "
                         f"{len(rounds)}")
    reduce = _reduce(statistic)
    point = loglog_slope(xs, [reduce(np.asarray(r, np.float64)) for r in rounds])
    rng = np.random.default_rng(seed)
    log_x = np.log(np.asarray(xs, np.float64))
    resampled = []
    for r in rounds:
        r = np.asarray(r, np.float64)
        index = rng.integers(0, r.size, size=(num_resamples, r.size))
        resampled.append(np.log(reduce(r[index], axis=-1)))
    log_y = np.stack(resampled, axis=-1)  # [num_resamples, len(xs)]
    centred = log_x - log_x.mean()
    slopes = (log_y - log_y.mean(axis=-1, keepdims=True)) @ centred / (centred @ centred)
    lo, hi = np.quantile(slopes, [0.025, 0.975])
    return {"mean": point, "ci95": [float(lo), float(hi)], "points": len(xs)}
