"""Does attention process a sequence in one parallel sweep while an RNN takes T steps?

Times one forward+backward pass of a recurrent layer (``flax.linen.RNN``: a ``lax.scan``
over the T positions) and of a self-attention layer (``attnjax.nn.MultiHeadAttention``:
every position at once), at the same width, for a sweep of sequence lengths. The RNN needs
T sequential steps, attention one (per layer) but O(T^2) work. The two are timed in
alternating rounds (``attnjax.bench``), length by length, so that load from other processes
on this shared machine hits both alike; the neighbours' load is recorded per length.
Reported: per-round and median times, the attention/RNN ratio per length with a bootstrap
interval over the paired rounds, the log-log slope of time vs T with an interval from
resampling the rounds, the crossover length, matmul FLOPs (``attnjax.cost``) and GFLOP/s.
Only ratios are meaningful across runs.

    python -m experiments.parallelism [--config configs/parallelism.py[:tour|:smoke]]
"""

from __future__ import annotations

import flax.linen as linen
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import bench, cost, experiment, nn
from experiments import REGISTRY

NAME = "parallelism"
CLAIM = REGISTRY[NAME].claim
LAYERS = ("rnn", "attention")
RULE = (
    "Two parts, both from one run. (a) parallel sweep: at each length T <= {short_length} "
    "self-attention's median forward+backward time is below the {cell_upper}'s (median "
    "over {repeats} alternating rounds); part (a) holds if that is so at >= {holds_at:.0%} "
    "of those lengths, does not hold at <= {fails_at:.0%}, mixed between. (b) sequential "
    "steps: the {cell_upper}'s time grows with T, log-log slope of its median time vs T "
    "over T={first}-{last} >= {min_rnn_exponent}. The claim holds if both parts hold, does "
    "not hold if neither does, mixed otherwise."
)

CELLS = {"gru": linen.GRUCell, "lstm": linen.OptimizedLSTMCell, "simple": linen.SimpleCell}


def rule(config: ml_collections.ConfigDict) -> str:
    return RULE.format(short_length=config.short_length, cell_upper=config.cell.upper(),
                       repeats=config.repeats, holds_at=config.verdict.holds_at,
                       fails_at=config.verdict.fails_at, first=min(config.lengths),
                       last=max(config.lengths),
                       min_rnn_exponent=config.verdict.min_rnn_exponent)


def layers(config: ml_collections.ConfigDict) -> dict:
    """``{"rnn": ..., "attention": ...}``, each mapping ``x [B, T, D]`` to ``[B, T, D]``.

    The recurrent layer is ``flax.linen.RNN`` over the cell ``attnjax.nn.RNNEncoder`` uses
    (that encoder embeds token ids; here the input is already a sequence of vectors).
    """
    return {
        "rnn": linen.RNN(CELLS[config.cell](config.width)),
        "attention": nn.MultiHeadAttention(num_heads=config.num_heads),
    }


def flops(name: str, config: ml_collections.ConfigDict, length: int) -> int:
    """Matmul FLOPs of one forward+backward of a layer on ``[B, T, D]`` (``attnjax.cost``)."""
    if name == "rnn":
        return cost.recurrent_flops(config.cell, length, width=config.width,
                                    batch=config.batch_size, backward=True)
    return cost.attention_layer_flops(length, width=config.width, heads=config.num_heads,
                                      batch=config.batch_size, backward=True)


def timer(module, config, length: int):
    """A jitted forward+backward of ``module`` at ``length``, compiled and warmed up."""
    key = jax.random.key(config.seed)
    x = jax.random.normal(key, (config.batch_size, length, config.width))
    params = jax.jit(module.init)(key, x)

    @jax.jit
    def step(params, x):
        loss = lambda p, x: jnp.sum(module.apply(p, x) ** 2)  # noqa: E731
        return jax.grad(loss, argnums=(0, 1))(params, x)

    jax.block_until_ready(step(params, x))  # compile and warm up
    return lambda: jax.block_until_ready(step(params, x))


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """Per length: alternating timed rounds of both layers; then the slopes and ratios."""
    modules = layers(config)
    rows = []
    for length in config.lengths:
        timers = {name: timer(m, config, length) for name, m in modules.items()}
        rounds = {name: [] for name in LAYERS}
        with bench.NeighbourLoad() as load:  # alternate, so neighbours hit both alike
            for _ in range(config.repeats):
                for name in LAYERS:
                    rounds[name].append(bench.seconds_per_call(timers[name], config.min_seconds))
        row = {"length": length, "neighbour_cores": load.cores}
        for name in LAYERS:
            s = float(np.median(rounds[name]))
            work = flops(name, config, length)
            row[name] = {"seconds": s, "round_seconds": rounds[name], "gflops": work / 1e9,
                         "gflop_per_second": work / s / 1e9,
                         "sequential_steps": length if name == "rnn" else 1}
        row["attention_over_rnn"] = row["attention"]["seconds"] / row["rnn"]["seconds"]
        row["round_ratios"] = [a / r for a, r in zip(rounds["attention"], rounds["rnn"],
                                                     strict=True)]
        run_dir.log(row)
        print(f"T={length:5d}  rnn {row['rnn']['seconds'] * 1e3:8.2f} ms  attention "
              f"{row['attention']['seconds'] * 1e3:8.2f} ms  ratio {row['attention_over_rnn']:.3f}"
              f"  (neighbours {load.cores:.2f} cores)")
        rows.append(row)
    lengths = [r["length"] for r in rows]
    exponents = {name: bench.slope_bootstrap(lengths, [r[name]["round_seconds"] for r in rows],
                                             statistic="median") for name in LAYERS}
    short = [r for r in rows if r["length"] <= config.short_length] or rows[:1]
    return {
        "rows": rows,
        "fitted_exponent": {name: e["mean"] for name, e in exponents.items()},
        "exponent_ci95": {name: e["ci95"] for name, e in exponents.items()},
        "crossover_length": next((r["length"] for r in rows if r["attention_over_rnn"] > 1.0),
                                 None),
        "short_rows": [r["length"] for r in short],
        "ratio_at_short_length": bench.repeat_summary(short[-1]["round_ratios"], "median"),
        "environment": bench.environment(),
    }


def metrics(numbers: dict, config) -> dict:
    """The headline records: the ratio at the largest short length (bootstrap over the
    paired rounds) and both time exponents (bootstrap over each length's rounds)."""
    out = {"attention_over_rnn_at_short_length": numbers["ratio_at_short_length"]}
    for name in LAYERS:
        out[f"{name}_time_exponent"] = {"mean": numbers["fitted_exponent"][name],
                                        "ci95": numbers["exponent_ci95"][name]}
    return out


def verdict(numbers: dict, config: ml_collections.ConfigDict) -> dict:
    """The pre-registered ``RULE`` applied to ``measure``'s numbers."""
    rows = numbers["rows"]
    by_length = {r["length"]: r for r in rows}
    short = [by_length[n] for n in numbers["short_rows"]]
    faster = [r["attention_over_rnn"] < 1.0 for r in short]
    holds_at, fails_at = config.verdict.holds_at, config.verdict.fails_at
    sweep_class, sweep_count = experiment.seed_verdict(faster, holds_at=holds_at,
                                                       fails_at=fails_at)
    sweep_count = sweep_count.replace("seeds", "lengths")
    e, ci = numbers["fitted_exponent"], numbers["exponent_ci95"]
    steps_ok = e["rnn"] >= config.verdict.min_rnn_exponent
    steps_class = "claim holds" if steps_ok else "claim does not hold here"
    overall = experiment.combine_verdicts({"parallel sweep": sweep_class,
                                           "sequential steps": steps_class})
    cell = config.cell.upper()
    ratio = numbers["ratio_at_short_length"]
    crossover = numbers["crossover_length"]
    first, last = rows[0], rows[-1]
    measured = (
        f"fwd+bwd time grows as T^{e['rnn']:.2f} [{ci['rnn'][0]:.2f}, {ci['rnn'][1]:.2f}] for "
        f"the {cell} and T^{e['attention']:.2f} [{ci['attention'][0]:.2f}, "
        f"{ci['attention'][1]:.2f}] for self-attention over T={first['length']}-"
        f"{last['length']}; attention/RNN time {first['attention_over_rnn']:.2f} at "
        f"T={first['length']}, {ratio['mean']:.2f} [{ratio['ci95'][0]:.2f}, "
        f"{ratio['ci95'][1]:.2f}] at T={short[-1]['length']}"
        + (f", {last['attention_over_rnn']:.2f} at T={last['length']}"
           if last["length"] != short[-1]["length"] else "") + "; "
        + (f"attention becomes slower from T={crossover}" if crossover
           else "attention is faster at every length measured"))
    reasons = [
        f"(a) attention is faster than the {cell} at {sweep_count} up to T="
        f"{config.short_length} ({sweep_class}; ratio {ratio['mean']:.2f} "
        f"[{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}] at T={short[-1]['length']}"
        + (f", slower from T={crossover}" if crossover else "") + ")",
        f"(b) the {cell}'s time grows as T^{e['rnn']:.2f} [{ci['rnn'][0]:.2f}, "
        f"{ci['rnn'][1]:.2f}] with its T sequential steps, "
        + ("at least" if steps_ok else "below") + f" T^{config.verdict.min_rnn_exponent}",
    ]
    return {"verdict": f"{overall}: " + "; ".join(reasons), "measured": measured,
            "parts": {"parallel sweep": sweep_class, "sequential steps": steps_class}}


def plot(numbers: dict, config, run_dir) -> list[str]:
    rows = numbers["rows"]
    figure = Figure(figsize=(11, 4))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    lengths = [r["length"] for r in rows]
    for name, label in (("rnn", f"{config.cell.upper()} (lax.scan, T steps)"),
                        ("attention", "self-attention (1 step)")):
        times = np.array([r[name]["round_seconds"] for r in rows]) * 1e3
        median = np.median(times, axis=1)
        left.errorbar(lengths, median, yerr=[median - times.min(1), times.max(1) - median],
                      fmt="o-", capsize=2, label=label)
        right.plot(lengths, [r[name]["gflop_per_second"] for r in rows], "o-", label=label)
    left.set(xscale="log", yscale="log", xlabel="sequence length T",
             ylabel="forward+backward (ms; bars: min-max of rounds)",
             title=f"One layer, B={config.batch_size}, D={config.width}")
    right.set(xscale="log", xlabel="sequence length T", ylabel="achieved GFLOP/s (matmuls)",
              title="Work done per second")
    left.legend()
    right.legend()
    figure.tight_layout()
    path = run_dir.figure_path("parallelism")
    figure.savefig(path, dpi=110)
    return [path.name]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    return {
        **numbers,
        "claim": CLAIM,
        "rule": rule(config),
        **verdict(numbers, config),
        "seeds": [],
        "metrics": metrics(numbers, config),
        "headline": ["attention_over_rnn_at_short_length", "rnn_time_exponent",
                     "attention_time_exponent"],
        "published": [],
        "figures": plot(numbers, config, run_dir),
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
