"""Does attention scale past one device?

Sequence parallelism: ring attention (``ops.ring_attention``) splits the sequence over n
devices; each keeps its query block while key/value blocks travel around the ring. Sharded
training: data parallel, FSDP and tensor-parallel heads (``attnjax.parallel``).

Measured on ``config.devices`` simulated CPU devices (one process; a child process with
``XLA_FLAGS=--xla_force_host_platform_device_count`` and ``JAX_PLATFORMS=cpu`` when this one
has fewer, also on a machine with one GPU):

1. per-device memory of exact attention, forward+backward, vs sequence length: one device
   (``xla``, which materialises the scores, and ``chunked``) and ring attention on 2, 4, 8
   devices, inputs sharded on the length axis. XLA's buffer assignment of the compiled
   program (``parallel.measure.memory``): what each device allocates, identical on real
   devices of the same kind; nothing this large is run;
2. the communication per device per step: bytes each device sends, read from the compiled
   program's collectives (``parallel.measure.collectives``), next to its matmul FLOPs;
3. ring attention run at ``check_length`` on 2, 4, 8 devices against one device (output and
   gradients, causal and not);
4. training: ``attnjax.parallel.check``'s loss curve under every layout and as 2 processes x
   4 devices (``jax.distributed``) vs one device; and the per-device memory and
   communication of each layout's training step for a mid-size LM (compiled, not run).

Timings are not reported: simulated devices share this machine's two cores. FLOPs are
``attnjax.cost.attention_matmul_flops`` (forward+backward, 7 matmuls), slopes
``attnjax.bench.loglog_slope``. Every byte count is a static property of the compiled
program, so the intervals of the byte metrics are exact (``[x, x]``); the spread over
lengths of the memory exponent is reported beside it (bootstrap over the lengths).

    python -m experiments.scale_out [--config configs/scale_out.py[:tour|:smoke]]
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import bench, cost, experiment, nn, ops, parallel, stats, train
from attnjax.parallel import check, distributed
from attnjax.parallel import measure as program_cost
from experiments import REGISTRY

NAME = "scale_out"
CLAIM = REGISTRY[NAME].claim
MIB = 2**20
RULE = (
    "Four parts, read from one run, combined as: holds if every part holds, does not hold if "
    "none does, mixed otherwise. (a) exact: ring attention on {ring_devices} devices matches "
    "one device at T={check_length} (max abs error of output and q/k/v gradients, causal "
    "{check_causal}) within {tolerance:g}. (b) memory: the per-device memory of ring "
    "attention forward+backward at T={top} (XLA's buffer assignment) falls with the device "
    "count n as n^p with p <= {max_memory_slope} (log-log slope over n in {ring_devices}). "
    "(c) communication: the bytes each of {largest} devices sends per step grow as T^q with "
    "q < {max_comm_slope} over T={lengths}, while the FLOPs grow as T^2. (d) training: every "
    "layout's loss curve {layouts}{multiprocess} stays within {curve_tolerance:g} of one "
    "device's over {train_steps} steps (left out when no layout is run)."
)


def rule(config) -> str:
    return RULE.format(
        ring_devices=tuple(config.ring_devices), check_length=config.check_length,
        check_causal=tuple(config.check_causal), tolerance=config.tolerance,
        top=max(config.lengths), max_memory_slope=config.verdict.max_memory_slope,
        largest=max(config.ring_devices), max_comm_slope=config.verdict.max_comm_slope,
        lengths=tuple(config.lengths), layouts=tuple(config.layouts),
        multiprocess=(f" and {config.multiprocess} as 2 processes" if config.multiprocess
                      else ""),
        curve_tolerance=config.curve_tolerance, train_steps=config.train_steps)


def parse_layout(text: str) -> dict:
    """``"data=4,model=2,fsdp"`` -> ``{"data": 4, "model": 2, "fsdp": True}``; ``"pmap"``."""
    layout: dict = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in ("data", "model", "fsdp", "pmap"):
            raise ValueError(f"scale_out: unknown layout field {key!r} in {text!r}; expected "
                             "data=N, model=N, fsdp or pmap")
        layout[key] = int(value) if value else True
    return layout


# --------------------------------------------------------------------------- attention
def attention_flops(config, length: int) -> int:
    """Matmul FLOPs of one forward+backward (``attnjax.cost.attention_matmul_flops``)."""
    return cost.attention_matmul_flops(length, heads=config.heads, head_dim=config.head_dim,
                                       batch=config.batch, causal=config.causal,
                                       backward=True)


def _compile_attention(fn, config, length: int, sharding=None):
    shape = (config.batch, length, config.heads, config.head_dim)
    arg = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
    grad = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), (0, 1, 2))
    jitted = jax.jit(grad) if sharding is None else jax.jit(
        grad, in_shardings=(sharding,) * 3, out_shardings=(sharding,) * 3)
    return jitted.lower(arg, arg, arg).compile()


def attention_rows(config) -> list[dict]:
    rows = []
    devices = jax.devices()
    for length in config.lengths:
        for impl in ("xla", "chunked"):
            fn = lambda q, k, v, impl=impl: ops.dot_product_attention(  # noqa: E731
                q, k, v, is_causal=config.causal, implementation=impl)
            compiled = _compile_attention(fn, config, length)
            rows.append({"length": length, "method": impl, "devices": 1,
                         **program_cost.memory(compiled), "sent_bytes": 0.0,
                         "flops_per_device": attention_flops(config, length)})
        for n in config.ring_devices:
            mesh = Mesh(np.array(devices[:n]), ("seq",))
            fn = lambda q, k, v, mesh=mesh: ops.ring_attention(  # noqa: E731
                q, k, v, mesh=mesh, is_causal=config.causal)
            compiled = _compile_attention(fn, config, length,
                                          NamedSharding(mesh, P(None, "seq")))
            comm = program_cost.collectives(compiled)
            rows.append({"length": length, "method": "ring", "devices": n,
                         **program_cost.memory(compiled),
                         "sent_bytes": sum(c["sent_bytes"] for c in comm.values()),
                         "collectives": comm,
                         "flops_per_device": attention_flops(config, length) / n})
        print(f"T={length}: " + ", ".join(
            f"{r['method']}x{r['devices']} {r['total_bytes'] / MIB:.1f} MiB"
            for r in rows if r["length"] == length))
    return rows


def ring_errors(config) -> list[dict]:
    """Ring attention vs one device, run: max abs error of the output and the gradients."""
    shape = (config.batch, config.check_length, config.heads, config.head_dim)
    q, k, v, cotangent = (jax.random.normal(jax.random.key(config.seed + i), shape)
                          for i in range(4))

    def output_and_grads(fn):
        out = jax.jit(fn)(q, k, v)
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), (0, 1, 2)))(q, k, v)
        return out, grads

    errors = []
    for causal in config.check_causal:
        ref_out, ref_grads = output_and_grads(functools.partial(
            ops.dot_product_attention, is_causal=causal, implementation="xla"))
        for n in config.ring_devices:
            mesh = Mesh(np.array(jax.devices()[:n]), ("seq",))
            out, grads = output_and_grads(functools.partial(
                ops.ring_attention, mesh=mesh, is_causal=causal))
            errors.append({
                "devices": n, "causal": causal, "length": config.check_length,
                "output_error": float(jnp.abs(out - ref_out).max()),
                "gradient_error": max(float(jnp.abs(g - r).max())
                                      for g, r in zip(grads, ref_grads, strict=True))})
    return errors


# --------------------------------------------------------------------------- training
def layout_costs(config) -> list[dict]:
    """Per-device memory and communication of one training step of a mid-size LM under
    each layout (compiled from shapes; nothing is allocated or run)."""
    lm = config.lm
    model = nn.DecoderOnlyLM(nn.TransformerConfig(
        vocab_size=lm.vocab_size, model_dim=lm.model_dim, num_heads=lm.num_heads,
        num_layers=lm.num_layers, mlp_dim=lm.mlp_dim, dropout_rate=0.0, max_len=lm.length,
        activation="gelu"))
    loss_fn = check.next_token_loss_fn(model)
    tokens = jax.ShapeDtypeStruct((lm.batch_size, lm.length + 1), jnp.int32)
    optimizer = train.make_optimizer(1e-3, warmup_steps=10, total_steps=100)
    state = jax.eval_shape(lambda: train.TrainState.create(model.init(
        jax.random.key(0), jnp.zeros((1, lm.length), jnp.int32))["params"], optimizer))
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    rows = []
    layouts = ["data=1", *config.cost_layouts]
    for text in layouts:
        layout = parse_layout(text)
        mesh = parallel.make_mesh(layout.get("data", 1) or None, layout.get("model", 1))
        shardings, step = parallel.sharded_step_function(
            loss_fn, optimizer, state, mesh, fsdp=layout.get("fsdp", False))
        placed = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                              state, shardings)
        batch = {"tokens": jax.ShapeDtypeStruct(tokens.shape, tokens.dtype,
                                                sharding=parallel.batch_sharding(mesh))}
        compiled = step.lower(placed, batch, jax.random.key(0)).compile()
        comm = program_cost.collectives(compiled)
        rows.append({"layout": text, "devices": mesh.size, **program_cost.memory(compiled),
                     "sent_bytes": sum(c["sent_bytes"] for c in comm.values()),
                     "collectives": comm, "param_bytes": param_bytes})
        print(f"{text:>22}: {rows[-1]['total_bytes'] / MIB:8.1f} MiB per device, sends "
              f"{rows[-1]['sent_bytes'] / MIB:8.1f} MiB per step")
    return rows


def loss_curves(config) -> dict:
    if not config.layouts:
        return {}
    curves = {"one device": check.loss_curve({}, num_steps=config.train_steps)}
    for text in config.layouts:
        curves[text] = check.loss_curve(parse_layout(text), num_steps=config.train_steps)
    return curves


def two_process_curve(config) -> dict | None:
    """The loss curve of ``config.multiprocess`` as 2 processes x devices/2 devices."""
    if not config.multiprocess:
        return None
    layout = parse_layout(config.multiprocess)
    args = [f"--{k}" if v is True else f"--{k}={v}" for k, v in layout.items()]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "curve.json"
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        command = [sys.executable, "-m", "attnjax.parallel.launch", "-n", "2",
                   "--local-devices", str(config.devices // 2), "--timeout", "300", "--",
                   sys.executable, "-m", "attnjax.parallel.check", *args,
                   "--steps", str(config.train_steps), "--out", str(out)]
        subprocess.run(command, env=env, check=True, capture_output=True)
        result = json.loads(out.read_text())
    result["command"] = " ".join(["python -m attnjax.parallel.launch -n 2 --local-devices",
                                  str(config.devices // 2), "-- python -m",
                                  "attnjax.parallel.check", *args])
    return result


# --------------------------------------------------------------------------- run
def measure_all(config) -> dict:
    """Everything that needs ``config.devices`` devices."""
    return {"attention": attention_rows(config), "ring_errors": ring_errors(config),
            "layouts": layout_costs(config), "curves": loss_curves(config)}


def _in_child(config) -> dict:
    """``measure_all`` in a child process that has ``config.devices`` CPU devices."""
    with tempfile.TemporaryDirectory() as folder:
        config_path, out_path = Path(folder) / "config.json", Path(folder) / "out.json"
        config_path.write_text(config.to_json())
        env = distributed.simulated_cpu_env(config.devices)
        subprocess.run([sys.executable, "-m", "experiments.scale_out", "--measure",
                        str(config_path), str(out_path)], env=env, check=True,
                       cwd=Path(__file__).resolve().parents[1])
        return json.loads(out_path.read_text())


def summarise(data: dict, config) -> dict:
    attention = data["attention"]
    top = max(config.lengths)
    at = {(r["method"], r["devices"], r["length"]): r for r in attention}
    ring_n = list(config.ring_devices)
    slopes = {t: bench.loglog_slope(ring_n, [at["ring", n, t]["total_bytes"] for n in ring_n])
              for t in config.lengths} if len(ring_n) > 1 else {}
    memory_slope = slopes.get(top, float("nan"))
    last_two = (bench.loglog_slope(ring_n[-2:], [at["ring", n, top]["total_bytes"]
                                                 for n in ring_n[-2:]])
                if len(ring_n) > 1 else float("nan"))
    largest = max(ring_n)
    ring_lengths = [at["ring", largest, t] for t in config.lengths]
    comm_slope = (bench.loglog_slope(config.lengths, [r["sent_bytes"] for r in ring_lengths])
                  if len(config.lengths) > 1 else float("nan"))
    versus = [{"length": t,
               "xla_one_device_mib": at["xla", 1, t]["total_bytes"] / MIB,
               "chunked_one_device_mib": at["chunked", 1, t]["total_bytes"] / MIB,
               f"ring_{largest}_devices_mib": at["ring", largest, t]["total_bytes"] / MIB,
               "xla_over_ring": at["xla", 1, t]["total_bytes"] / at["ring", largest, t][
                   "total_bytes"],
               "ring_sent_mib": at["ring", largest, t]["sent_bytes"] / MIB,
               "ring_bytes_per_flop": at["ring", largest, t]["sent_bytes"]
               / at["ring", largest, t]["flops_per_device"]} for t in config.lengths]
    ref = np.array(data["curves"].get("one device", []))
    curve_errors = {k: float(np.abs(np.array(c) - ref).max())
                    for k, c in data["curves"].items() if k != "one device"}
    if data.get("two_process"):
        curve_errors["2 processes: " + config.multiprocess] = float(
            np.abs(np.array(data["two_process"]["losses"]) - ref).max())
    return {"memory_slope_vs_devices": memory_slope, "memory_length": top,
            "memory_slope_by_length": {str(t): v for t, v in slopes.items()},
            "memory_slope_last_two_devices": last_two,
            "comm_slope_vs_length": comm_slope, "with_vs_without": versus,
            "max_ring_error": max(max(e["output_error"], e["gradient_error"])
                                  for e in data["ring_errors"]),
            "curve_errors": curve_errors}


def verdict(numbers: dict, config) -> dict:
    """The pre-registered ``RULE`` applied to ``measure``'s numbers."""
    s = numbers["summary"]
    first, last = s["with_vs_without"][0], s["with_vs_without"][-1]
    largest = max(config.ring_devices)
    layouts = {r["layout"]: r for r in numbers["layouts"]}
    one = layouts["data=1"]
    layout_text = "; ".join(
        f"{k}: {r['total_bytes'] / one['total_bytes']:.2f}x the memory, sends "
        f"{r['sent_bytes'] / r['param_bytes']:.2f}x the parameter bytes"
        for k, r in layouts.items() if k != "data=1")
    measured = (
        f"per-device memory of exact attention fwd+bwd at T={s['memory_length']} falls as "
        f"n^{s['memory_slope_vs_devices']:.2f} over {tuple(config.ring_devices)} ring devices "
        f"(n^{s['memory_slope_last_two_devices']:.2f} over the last two; at T="
        + ", ".join(f"{t}: n^{v:.2f}" for t, v in s["memory_slope_by_length"].items()) + "); "
        f"one device (xla) {first['xla_one_device_mib']:.0f} MiB at T={first['length']} and "
        f"{last['xla_one_device_mib']:.0f} MiB at T={last['length']}, chunked "
        f"{last['chunked_one_device_mib']:.0f} MiB, ring on {largest} devices "
        f"{last[f'ring_{largest}_devices_mib']:.0f} MiB per device "
        f"({last['xla_over_ring']:.0f}x less than xla); ring sends "
        f"{first['ring_sent_mib']:.1f} -> {last['ring_sent_mib']:.1f} MiB per device per step "
        f"(T^{s['comm_slope_vs_length']:.2f}) while its FLOPs grow as T^2: "
        f"{first['ring_bytes_per_flop']:.2g} -> {last['ring_bytes_per_flop']:.2g} bytes/FLOP; "
        f"ring vs one device max error {s['max_ring_error']:.1e}; loss curves vs one device: "
        + (", ".join(f"{k} {v:.1e}" for k, v in s["curve_errors"].items()) or "not run")
        + f"; mid-size LM step on {config.devices} devices vs 1: {layout_text}")
    ring_vs_chunked = last[f"ring_{largest}_devices_mib"] / last["chunked_one_device_mib"]

    def part(ok: bool) -> str:
        return "claim holds" if ok else "claim does not hold here"

    memory = s["memory_slope_vs_devices"]
    comm = s["comm_slope_vs_length"]
    bad_curves = [k for k, v in s["curve_errors"].items() if v > config.curve_tolerance]
    parts = {
        "exact": part(s["max_ring_error"] <= config.tolerance),
        "memory": part(memory <= config.verdict.max_memory_slope),
        "communication": part(comm < config.verdict.max_comm_slope),
    }
    reasons = {
        "exact": f"ring attention differs from one device by {s['max_ring_error']:.1e} "
                 f"(tolerance {config.tolerance:g})",
        "memory": f"per-device memory falls as n^{memory:.2f} over "
                  f"{tuple(config.ring_devices)} devices at T={s['memory_length']} (rule: "
                  f"<= n^{config.verdict.max_memory_slope}; n^"
                  f"{s['memory_slope_last_two_devices']:.2f} over the last doubling; "
                  f"{largest} devices hold {ring_vs_chunked:.2f}x of one device's chunked "
                  "attention)",
        "communication": f"each device sends T^{comm:.2f} bytes (rule: < T^"
                         f"{config.verdict.max_comm_slope}) while it computes T^2",
    }
    if s["curve_errors"]:
        parts["training"] = part(not bad_curves)
        worst = max(s["curve_errors"].values())
        reasons["training"] = (
            f"{len(s['curve_errors']) - len(bad_curves)} of {len(s['curve_errors'])} layouts "
            f"train like one device (max loss difference {worst:.1e}, tolerance "
            f"{config.curve_tolerance:g})" + (": not " + ", ".join(bad_curves) if bad_curves
                                              else ""))
    overall = experiment.combine_verdicts(parts)
    held = [k for k, v in parts.items() if v == "claim holds"]
    text = (f"{overall}: {len(held)} of {len(parts)} parts hold; "
            + "; ".join(f"{k} ({experiment.verdict_class(v)}): {reasons[k]}"
                        for k, v in parts.items()))
    return {"verdict": text, "measured": measured, "parts": parts}


def metrics(numbers: dict, config) -> dict:
    """The headline records. Byte counts and errors are exact properties of the compiled
    programs and one deterministic run (``ci95 = [x, x]``); the memory exponent's spread
    over the measured lengths is bootstrapped over those lengths."""
    s = numbers["summary"]

    def exact(x: float) -> dict:
        return {"mean": float(x), "ci95": [float(x), float(x)], "exact": True}

    out = {"memory_slope_vs_devices": exact(s["memory_slope_vs_devices"]),
           "comm_slope_vs_length": exact(s["comm_slope_vs_length"]),
           "max_ring_error": exact(s["max_ring_error"]),
           "xla_over_ring_memory_at_longest": exact(s["with_vs_without"][-1]["xla_over_ring"])}
    by_length = list(s["memory_slope_by_length"].values())
    if by_length:
        out["memory_slope_vs_devices_over_lengths"] = stats.item_summary(by_length)
    if s["curve_errors"]:
        out["max_loss_curve_error"] = exact(max(s["curve_errors"].values()))
    return out


def plot_attention(data: dict, config, run_dir) -> str:
    figure = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    rows = data["attention"]
    lengths = list(config.lengths)
    series = [("xla", 1, "one device, xla (scores materialised)"),
              ("chunked", 1, "one device, chunked"),
              *[("ring", n, f"ring attention, {n} devices") for n in config.ring_devices]]
    for method, n, label in series:
        ys = [next(r["total_bytes"] for r in rows if (r["method"], r["devices"], r["length"])
                   == (method, n, t)) / MIB for t in lengths]
        left.plot(lengths, ys, "o-", label=label)
    left.set(xscale="log", yscale="log", xlabel="sequence length T",
             ylabel="per-device memory, fwd+bwd (MiB)",
             title=f"B={config.batch}, H={config.heads}, D={config.head_dim}, fp32")
    left.legend(fontsize=7)
    for t in lengths:
        ring = [r for r in rows if r["method"] == "ring" and r["length"] == t]
        line, = middle.plot([r["devices"] for r in ring], [r["total_bytes"] / MIB for r in ring],
                            "o-", label=f"T={t}")
        chunked = next(r for r in rows if r["method"] == "chunked" and r["length"] == t)
        middle.plot([1], [chunked["total_bytes"] / MIB], "s", color=line.get_color(), mfc="none")
    n = np.array(config.ring_devices, float)
    top = [r["total_bytes"] / MIB for r in rows if r["method"] == "ring"
           and r["length"] == max(lengths)]
    middle.plot(n, top[0] * n[0] / n, "k--", lw=1, label="1/n")
    middle.set(xscale="log", yscale="log", xlabel="devices n", ylabel="MiB per device",
               title="Ring attention vs devices (squares: chunked, 1 device)")
    middle.set_xticks([1, *config.ring_devices], ["1", *[str(d) for d in config.ring_devices]])
    middle.legend(fontsize=7)
    for n_dev in config.ring_devices:
        ring = [r for r in rows if r["method"] == "ring" and r["devices"] == n_dev]
        right.plot([r["length"] for r in ring], [r["sent_bytes"] / MIB for r in ring], "o-",
                   label=f"{n_dev} devices: sent")
    right.set(xscale="log", yscale="log", xlabel="sequence length T",
              ylabel="MiB sent per device per step", title="Ring communication vs compute")
    twin = right.twinx()
    ring = [r for r in rows if r["method"] == "ring" and r["devices"] == max(config.ring_devices)]
    twin.plot([r["length"] for r in ring], [r["flops_per_device"] / 1e9 for r in ring], "k:",
              label="GFLOP per device (max n)")
    twin.set(yscale="log", ylabel="GFLOP per device")
    right.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path = run_dir.figure_path("scale_out_attention")
    figure.savefig(path, dpi=110)
    return path.name


def plot_training(data: dict, config, run_dir) -> str:
    figure = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    ref = np.array(data["curves"].get("one device", []))
    steps = np.arange(1, len(ref) + 1)
    left.plot(steps, ref, "k-", lw=3, alpha=0.4, label="one device")
    curves = dict(data["curves"])
    if data.get("two_process"):
        curves["2 processes x 4: " + config.multiprocess] = data["two_process"]["losses"]
    for name, curve in curves.items():
        if name == "one device":
            continue
        left.plot(steps, curve, "--", lw=1, label=name)
        middle.plot(steps, np.maximum(np.abs(np.array(curve) - ref), 1e-9), "o-", ms=3,
                    label=name)
    left.set(xlabel="step", ylabel="training loss", title="Same global batches, any layout")
    left.legend(fontsize=7)
    middle.axhline(config.curve_tolerance, color="r", lw=1, ls="--", label="tolerance")
    middle.set(yscale="log", xlabel="step", ylabel="|loss - loss on one device| (0 at 1e-9)",
               title="Difference from one device")
    middle.legend(fontsize=6)
    layouts = data["layouts"]
    x = np.arange(len(layouts))
    right.bar(x - 0.2, [r["total_bytes"] / MIB for r in layouts], 0.4, label="MiB per device")
    right.bar(x + 0.2, [r["sent_bytes"] / MIB for r in layouts], 0.4,
              label="MiB sent per device per step")
    right.set_xticks(x, [r["layout"] for r in layouts], rotation=20, fontsize=7)
    lm = config.lm
    right.set(ylabel="MiB", title=f"LM step, d={lm.model_dim}, {lm.num_layers} layers, "
              f"B={lm.batch_size}x{lm.length}")
    right.legend(fontsize=7)
    figure.tight_layout()
    path = run_dir.figure_path("scale_out_training")
    figure.savefig(path, dpi=110)
    return path.name


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """Everything measured (in a child process with ``config.devices`` devices when this
    one has fewer), the 2-process curve, and the summary the verdict reads."""
    data = measure_all(config) if jax.device_count() >= config.devices else _in_child(config)
    data["two_process"] = two_process_curve(config)
    for row in data["attention"]:
        run_dir.log({"kind": "attention", **{k: v for k, v in row.items()
                                             if k != "collectives"}})
    return {**data, "summary": summarise(data, config)}


def plot(numbers: dict, config, run_dir) -> list[str]:
    return [plot_attention(numbers, config, run_dir), plot_training(numbers, config, run_dir)]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    return {**numbers, "claim": CLAIM, "rule": rule(config), **verdict(numbers, config),
            "seeds": [], "metrics": metrics(numbers, config),
            "headline": ["memory_slope_vs_devices", "comm_slope_vs_length", "max_ring_error"],
            "published": [], "figures": plot(numbers, config, run_dir)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        config = ml_collections.ConfigDict(json.loads(Path(sys.argv[2]).read_text()))
        Path(sys.argv[3]).write_text(json.dumps(measure_all(config)))
    else:
        experiment.main(NAME, run)
