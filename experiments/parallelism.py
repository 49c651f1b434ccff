"""Does attention process a sequence in one parallel sweep while an RNN takes T steps?

Times one forward+backward pass of a recurrent layer (``attnjax.nn.RecurrentStates``: a
``lax.scan`` over the T positions) and of a self-attention layer
(``attnjax.nn.MultiHeadAttention``: every position at once), at the same width, for a sweep
of sequence lengths. The RNN needs T sequential steps, attention one (per layer) but
O(T^2) work. Reported: median wall time per length, the fitted exponent of time vs T, the
crossover length (where attention stops being faster, if it does in the sweep), FLOPs and
achieved GFLOP/s. The two are timed alternately, length by length, so that load from other
processes on this shared machine hits both alike; only ratios are meaningful across runs.

    python -m experiments.parallelism [--config configs/parallelism.py[:smoke]]
"""

from __future__ import annotations

import time

import flax.linen as linen
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, nn
from experiments import REGISTRY

NAME = "parallelism"
CLAIM = REGISTRY[NAME].claim


CELLS = {"gru": linen.GRUCell, "lstm": linen.OptimizedLSTMCell, "simple": linen.SimpleCell}


def layers(config: ml_collections.ConfigDict) -> dict:
    """``{"rnn": ..., "attention": ...}``, each mapping ``x [B, T, D]`` to ``[B, T, D]``.

    The recurrent layer is ``flax.linen.RNN`` over the cell ``attnjax.nn.RNNEncoder`` uses
    (that encoder embeds token ids; here the input is already a sequence of vectors).
    """
    return {
        "rnn": linen.RNN(CELLS[config.cell](config.width)),
        "attention": nn.MultiHeadAttention(num_heads=config.num_heads),
    }


def flops(name: str, config: ml_collections.ConfigDict, length: int) -> float:
    """Forward FLOPs (multiply-adds count 2) of one layer on ``[B, T, D]``; backward ~2x."""
    b, d = config.batch_size, config.width
    if name == "rnn":
        gates = {"gru": 3, "lstm": 4, "simple": 1}[config.cell]
        return 2.0 * b * length * gates * 2 * d * d  # input and recurrent matmuls per step
    projections = 2.0 * b * length * 4 * d * d  # q, k, v, out
    scores_and_values = 2.0 * b * 2 * length * length * d
    return projections + scores_and_values


def timer(module, config, length: int):
    """A jitted forward+backward of ``module`` at ``length`` and its inputs."""
    key = jax.random.key(config.seed)
    x = jax.random.normal(key, (config.batch_size, length, config.width))
    params = jax.jit(module.init)(key, x)

    @jax.jit
    def step(params, x):
        loss = lambda p, x: jnp.sum(module.apply(p, x) ** 2)
        return jax.grad(loss, argnums=(0, 1))(params, x)

    jax.block_until_ready(step(params, x))  # compile and warm up
    return lambda: jax.block_until_ready(step(params, x))


def measure(fn, repeats: int, min_seconds: float) -> float:
    """Median seconds per call over ``repeats`` rounds, each at least ``min_seconds``."""
    rounds = []
    for _ in range(repeats):
        n, tic = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - tic
            if elapsed >= min_seconds:
                break
        rounds.append(elapsed / n)
    return float(np.median(rounds))


def fitted_exponent(lengths, seconds) -> float:
    """Slope of log(time) vs log(T)."""
    return float(np.polyfit(np.log(lengths), np.log(seconds), 1)[0])


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    modules = layers(config)
    rows = []
    for length in config.lengths:
        row = {"length": length}
        timers = {name: timer(m, config, length) for name, m in modules.items()}
        # Alternate the two, repeats times, so that neighbours' load hits both alike.
        seconds = {name: [] for name in modules}
        for _ in range(config.repeats):
            for name, fn in timers.items():
                seconds[name].append(measure(fn, 1, config.min_seconds))
        for name in modules:
            s = float(np.median(seconds[name]))
            work = 3.0 * flops(name, config, length)  # forward + backward
            row[name] = {"seconds": s, "gflops": work / 1e9,
                         "gflop_per_second": work / s / 1e9,
                         "sequential_steps": length if name == "rnn" else 1}
        row["attention_over_rnn"] = row["attention"]["seconds"] / row["rnn"]["seconds"]
        run_dir.log(row)
        print(f"T={length:5d}  rnn {row['rnn']['seconds'] * 1e3:8.2f} ms  attention "
              f"{row['attention']['seconds'] * 1e3:8.2f} ms  ratio {row['attention_over_rnn']:.3f}")
        rows.append(row)
    lengths = [r["length"] for r in rows]
    exponents = {
        name: fitted_exponent(lengths, [r[name]["seconds"] for r in rows]) for name in modules
    }
    crossover = next((r["length"] for r in rows if r["attention_over_rnn"] > 1.0), None)
    results = {"rows": rows, "fitted_exponent": exponents, "crossover_length": crossover,
               "figures": [plot(rows, config, run_dir)]}
    results.update(verdict_of(results, config))
    return results


def plot(rows, config, run_dir) -> str:
    figure = Figure(figsize=(11, 4))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    lengths = [r["length"] for r in rows]
    for name, label in (("rnn", f"{config.cell.upper()} (lax.scan, T steps)"),
                        ("attention", "self-attention (1 step)")):
        left.plot(lengths, [r[name]["seconds"] * 1e3 for r in rows], "o-", label=label)
        right.plot(lengths, [r[name]["gflop_per_second"] for r in rows], "o-", label=label)
    left.set(xscale="log", yscale="log", xlabel="sequence length T",
             ylabel="forward+backward (ms)", title=f"One layer, B={config.batch_size}, "
             f"D={config.width}")
    right.set(xscale="log", xlabel="sequence length T", ylabel="achieved GFLOP/s",
              title="Work done per second")
    left.legend()
    right.legend()
    figure.tight_layout()
    path = run_dir.figure_path("parallelism")
    figure.savefig(path, dpi=110)
    return path.name


def verdict_of(results: dict, config: ml_collections.ConfigDict) -> dict:
    rows = results["rows"]
    e = results["fitted_exponent"]
    crossover = results["crossover_length"]
    small = [r for r in rows if r["length"] <= config.short_length]
    faster_short = all(r["attention_over_rnn"] < 1.0 for r in small)
    measured = (
        f"fwd+bwd time grows as T^{e['rnn']:.2f} for the {config.cell.upper()} and T^"
        f"{e['attention']:.2f} for self-attention over T={rows[0]['length']}-{rows[-1]['length']}; "
        f"attention/RNN time {rows[0]['attention_over_rnn']:.2f} at T={rows[0]['length']}, "
        f"{rows[-1]['attention_over_rnn']:.2f} at T={rows[-1]['length']}; "
        + (f"attention becomes slower from T={crossover}" if crossover
           else "attention is faster at every length measured")
    )
    if faster_short and e["rnn"] > 0.7:
        verdict = ("claim holds: the RNN's time grows with its T sequential steps while "
                   f"attention's one parallel sweep is faster up to T={config.short_length}")
        if crossover:
            verdict += f" (its O(T^2) work overtakes it from T={crossover})"
    elif faster_short:
        verdict = "mixed: attention is faster, but the RNN's time does not grow with T here"
    else:
        verdict = ("claim does not hold here: the sequential RNN is faster than attention at "
                   f"some T <= {config.short_length} on this machine")
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


if __name__ == "__main__":
    experiment.main(NAME, run)
