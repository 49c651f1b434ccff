"""Structured masks in chunked attention: skipped blocks against full causal and dense masks.

``ops.dot_product_attention(implementation="chunked")`` takes a sliding window
(``local_window_size``) and packed documents (``query_segment_ids``) as a description
(``ops.structure``) and skips the empty ``(query block, key block)`` pairs without forming
a ``[T, S]`` array. This measures what that buys, B=1, H=8, D=64, float32, forward +
backward (``jax.grad`` of ``sum(out * cotangent)`` w.r.t. q, k, v, jitted and compiled
ahead of the rounds):

* ``sliding_window``: causal window of ``--window`` keys (``local_window_size=(w - 1, 0)``
  with ``is_causal``: query ``i`` sees keys ``i - w + 1 .. i``, ``w`` keys with itself) at
  ``--length`` T and 2T, against full causal chunked attention at T.
* ``documents``: ``T / --doc-length`` equal packed documents (segment ids), non-causal and
  causal, structured against the same mask given densely as a bool ``mask [1, 1, T, T]``
  to ``"chunked"`` (and, for the causal one, also dense document mask + ``is_causal``,
  which keeps the causal block skipping); to ``"xla"`` only where XLA's buffer assignment of
  the program fits in half of the available memory (else its size is reported).
* ``flex_forward`` (with ``--peer``, a python with torch): ``torch.compile(flex_attention)``
  with ``create_block_mask`` for the same three masks on the same q, k, v
  (``benchmarks/peers/flex_attention_torch.py``, one long-lived subprocess asked for one
  call per round), against the JAX forward. Forward only: FlexAttention has no backward on
  the CPU in torch 2.13 (the peer records the exact error). Outputs are compared.
* ``memory``: in a fresh subprocess each, the peak RSS (``ru_maxrss``) of the causal window
  forward + backward at ``--memory-fwdbwd-length`` and forward at ``--memory-fwd-length``,
  with the RSS after importing jax and allocating the inputs; and XLA's buffer assignment of
  each program (temp bytes, and the largest buffer of the optimised HLO, which must have
  fewer than ``T * S / 8`` elements: no ``[T, S]`` buffer). These run first, before this
  process allocates anything: a child's ``ru_maxrss`` starts at its parent's RSS on Linux
  (``VmHWM``, its own high-water mark, is reported beside it).
* ``--blocks 256x256,128x512``: extra window variants through ``ops.chunked_attention``
  with those ``block_q x block_k`` (``dot_product_attention`` uses ``default_blocks``), to
  see which blocks a ratio would need; each variant also reports the block pairs visited
  and masked (``structure.block_schedule``).

Within a group the variants are timed in the same rounds, in alternating order (reversed
every other round); each round of a variant repeats its call for ``--min-seconds`` (at least
once) under ``bench.time_calls``, which logs the CPU use of other processes
(``neighbour_cores``); the 1-minute load average is logged at each round. Ratios are taken
per round and their median is reported (``bench.repeat_summary``: bootstrap interval over
the rounds). This machine is shared, so only same-run ratios mean anything.

    python -m benchmarks.structured_masks [--quick] [--rounds 5] [--peer /tmp/torchenv/bin/python]

The peer environment (PyTorch never enters attnjax's): ``python3 -m venv /tmp/torchenv &&
/tmp/torchenv/bin/pip install torch==2.13.0 numpy`` (the CPU wheel); without it the
``flex_forward`` group is skipped and says so.

Writes ``results.json`` and ``table.md`` to ``runs/structured_masks/<time>/`` (``--workdir``)
and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from attnjax import bench, ops
from attnjax.ops import structure as structure_lib
from attnjax.parallel.measure import _SHAPE  # the HLO shape pattern of measure.memory's sizes
from attnjax.train.trainer import _available_memory_bytes  # MemAvailable, as the trainer reads it

PEER = Path(__file__).parent / "peers" / "flex_attention_torch.py"
BATCH, HEADS, HEAD_DIM = 1, 8, 64

RULE = (
    "Median over rounds of the per-round ratio of seconds (fwd+bwd, same run): "
    "full causal / causal window at T >= 5; window at 2T / window at T <= 2.3; "
    "dense bool mask to chunked / segment ids, non-causal and causal, >= 4 each. "
    "Peak RSS of the window fwd+bwd at the memory length < 2 GB (2e9 bytes), and no buffer "
    "of XLA's compiled program (largest shape in the optimised HLO) with >= T*S/8 elements."
)
BARS = {  # name: (ratio key, comparison, threshold)
    "causal_over_window": (">=", 5.0),
    "window_2t_over_t": ("<=", 2.3),
    "docs_dense_over_structured": (">=", 4.0),
    "docs_causal_dense_over_structured": (">=", 4.0),
}


# --------------------------------------------------------------------------- programs


def make_inputs(t: int, seed: int = 0, count: int = 4):
    """q, k, v and the cotangent (the first ``count`` of them), each ``[B, T, H, D]``
    float32 standard normal.

    Drawn by NumPy and copied over one at a time: eager ``jax.random.normal`` of a 256 MiB
    array leaves ~800 MiB more resident in this process (seen at T=131072), which would
    swamp the memory rows' baseline."""
    rng = np.random.default_rng(seed)
    shape = (BATCH, t, HEADS, HEAD_DIM)
    return tuple(jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
                 for _ in range(count))


def document_ids(t: int, doc_length: int):
    """``[B, T]`` int32: position ``i`` is in document ``i // doc_length``."""
    return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32) // doc_length, (BATCH, t))


def dense_document_mask(t: int, doc_length: int, causal: bool):
    """The documents' mask as a bool ``[B, 1, T, T]`` (True = attend)."""
    seg = document_ids(t, doc_length)
    mask = seg[:, None, :, None] == seg[:, None, None, :]
    if causal:
        mask = jnp.logical_and(mask, jnp.tril(jnp.ones((t, t), bool)))
    return mask


def attention_fn(structured: dict, implementation: str = "chunked", blocks=None):
    """``attend(q, k, v, arrays)``: ``dot_product_attention`` with the static keyword
    arguments ``structured`` and the traced ones ``arrays`` (segment ids, a dense mask).
    ``blocks=(block_q, block_k)`` calls ``ops.chunked_attention`` with those block sizes
    (``dot_product_attention`` always uses ``chunked.default_blocks``)."""
    def attend(q, k, v, arrays):
        kwargs = {**structured, **arrays}
        if blocks is None:
            return ops.dot_product_attention(q, k, v, implementation=implementation, **kwargs)
        mask = kwargs.pop("mask", None)
        st = structure_lib.make_structure((q.shape[0],), q.shape[1], k.shape[1], **kwargs)
        return ops.chunked_attention(q, k, v, mask=mask, structure=st, block_q=blocks[0],
                                     block_k=blocks[1])
    return attend


def block_visits(t: int, structured: dict, arrays: dict, blocks=None) -> dict:
    """The ``(query block, key block)`` pairs ``"chunked"`` visits (``visited``, of ``of``)
    and how many of those it masks (``masked``), from ``structure.block_schedule``: the plan
    ``chunked_attention`` runs with these arguments (``default_blocks`` unless ``blocks``)."""
    kwargs = {**structured, **{k: v for k, v in arrays.items() if k != "mask"}}
    st = structure_lib.make_structure((BATCH,), t, t, **kwargs)
    bq, bk = blocks or ops.default_blocks(t, t, st is not None and st.causal is not None)
    bq, bk = min(bq, t), min(bk, t)
    n_q, n_k = -(-t // bq), -(-t // bk)
    _, count, full = structure_lib.block_schedule(
        st, t=t, s=t, block_q=bq, block_k=bk, n_q=n_q, n_k=n_k, has_dense_mask="mask" in arrays)
    count, full = np.asarray(count), np.asarray(full)
    unmasked = int((full & (np.arange(n_k)[None, :] < count[:, None])).sum())
    return {"block_q": bq, "block_k": bk, "visited": int(count.sum()),
            "masked": int(count.sum()) - unmasked, "of": n_q * n_k}


def compile_program(attend, inputs, arrays, backward: bool):
    """``(compiled, args, compile_s)``: the jitted fwd+bwd (grads of ``sum(out * ct)``
    w.r.t. q, k, v) or forward of ``attend``, lowered and compiled for ``args``."""
    q, k, v = inputs[:3]
    if backward:
        ct = inputs[3]
        def program(q, k, v, ct, arrays):
            loss = lambda q, k, v: jnp.sum(attend(q, k, v, arrays) * ct)  # noqa: E731
            return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
        args = (q, k, v, ct, arrays)
    else:
        program, args = attend, (q, k, v, arrays)
    tic = time.perf_counter()
    compiled = jax.jit(program).lower(*args).compile()
    return compiled, args, time.perf_counter() - tic


def largest_buffer(compiled, t: int, s: int) -> dict:
    """The largest array shape in the optimised HLO of ``compiled`` (every instruction's
    result, parameters and loop-carried blocks included), against the ``T * S / 8`` bar."""
    shapes = _SHAPE.findall(compiled.as_text())
    dtype, dims = max(shapes, key=lambda x: math.prod(int(d) for d in x[1].split(",") if d))
    elements = math.prod(int(d) for d in dims.split(",") if d)
    return {"shape": f"{dtype}[{dims}]", "elements": elements, "t_s_over_8": t * s // 8,
            "no_txs_buffer": elements < t * s // 8}


class Variant:
    """One timed program of a group: ``measure()`` times one round."""

    def __init__(self, name: str, t: int, description: str):
        self.name, self.t, self.description = name, t, description
        self.round_seconds: list[float] = []
        self.neighbour_cores: list[float] = []
        self.info: dict = {}

    def record(self) -> dict:
        median = float(np.median(self.round_seconds)) if self.round_seconds else None
        return {"name": self.name, "t": self.t, "description": self.description,
                "seconds_median": median, "round_seconds": self.round_seconds,
                "neighbour_cores": self.neighbour_cores, **self.info}


class JaxVariant(Variant):
    def __init__(self, name, t, description, attend, inputs, arrays, backward=True,
                 min_seconds=0.5, blocks_visited=None):
        super().__init__(name, t, description)
        compiled, args, compile_s = compile_program(attend, inputs, arrays, backward)
        self.call = lambda: jax.block_until_ready(compiled(*args))  # noqa: E731
        tic = time.perf_counter()
        self.output = self.call()
        self.info = {"mode": "fwd+bwd" if backward else "fwd", "compile_s": round(compile_s, 2),
                     "first_call_s": round(time.perf_counter() - tic, 3),
                     "xla_memory": bench.xla_memory(compiled),
                     "largest_buffer": largest_buffer(compiled, t, t),
                     "blocks_visited": blocks_visited}
        self.min_seconds = min_seconds

    def measure(self) -> None:
        timed = bench.time_calls(self.call, repeats=1, min_seconds=self.min_seconds)
        self.round_seconds.append(timed["round_seconds"][0])
        self.neighbour_cores.append(timed["neighbour_cores"])


class Peer:
    """The long-lived FlexAttention subprocess (``benchmarks/peers/flex_attention_torch.py``)."""

    def __init__(self, python: str, folder: Path, args, log: Path):
        command = [python, str(PEER), "--inputs", str(folder), "--window-left",
                   str(args.window - 1), "--doc-length", str(args.doc_length),
                   "--threads", str(args.threads)]
        self._log = open(log, "w")  # noqa: SIM115 - open while the peer lives
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._log, text=True)
        self.header = self._reply()

    def _reply(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the FlexAttention peer ended (rc {self.process.wait()}); "
                           f"see {self._log.name}")

    def ask(self, case: str) -> dict:
        self.process.stdin.write(case + "\n")
        self.process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)
        self._log.close()


class PeerVariant(Variant):
    def __init__(self, name, t, description, peer: Peer, case: str, min_seconds=0.5):
        super().__init__(name, t, description)
        self.peer, self.case, self.min_seconds = peer, case, min_seconds
        self.info = {"mode": "fwd", "compile_s": peer.header["compile_s"].get(case),
                     **peer.header["block_mask"].get(case, {})}

    def measure(self) -> None:
        # bench.NeighbourLoad counts the peer as "other"; its own CPU time is taken out.
        seconds, peer_cpu, n = 0.0, 0.0, 0
        with bench.NeighbourLoad() as load:
            tic = time.perf_counter()
            while n == 0 or time.perf_counter() - tic < self.min_seconds:
                reply = self.peer.ask(self.case)
                seconds += reply["seconds"]
                peer_cpu += reply["cpu_seconds"]
                n += 1
            wall = time.perf_counter() - tic
        self.round_seconds.append(seconds / n)
        self.neighbour_cores.append(round(max(0.0, load.cores - peer_cpu / wall), 3))


def timed_rounds(variants: list[Variant], rounds: int) -> list[dict]:
    """``rounds`` rounds over ``variants``, in reversed order every other round; returns
    each round's order and 1-minute load average (before and after)."""
    log = []
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        before = os.getloadavg()[0]
        for variant in order:
            variant.measure()
        log.append({"round": r, "order": [v.name for v in order],
                    "loadavg_1m": [round(before, 2), round(os.getloadavg()[0], 2)]})
        print(f"  round {r}: " + ", ".join(f"{v.name} {v.round_seconds[-1]:.3f}s"
                                             for v in variants), file=sys.stderr, flush=True)
    return log


def ratio(numerator: Variant, denominator: Variant) -> dict:
    """Per-round ratios of seconds, their median and bootstrap interval."""
    per_round = [a / b for a, b in zip(numerator.round_seconds, denominator.round_seconds,
                                       strict=True)]
    summary = bench.repeat_summary(per_round, "median")
    return {"numerator": numerator.name, "denominator": denominator.name,
            "median": summary["mean"], "ci95": summary["ci95"],
            "per_round": [round(x, 4) for x in per_round]}


# --------------------------------------------------------------------------- groups


def sliding_window_group(args) -> dict:
    t, w = args.length, args.window
    window = {"is_causal": True, "local_window_size": (w - 1, 0)}
    variants = []
    for name, length, structured, blocks in [
        ("window", t, window, None), ("causal", t, {"is_causal": True}, None),
        ("window_2t", 2 * t, window, None),
        *[(f"window_{bq}x{bk}", t, window, (bq, bk)) for bq, bk in args.blocks],
    ]:
        label = "default blocks" if blocks is None else f"block_q={blocks[0]}, block_k={blocks[1]}"
        description = (f"chunked, is_causal, local_window_size=({w - 1}, 0), {label}"
                       if "local_window_size" in structured else f"chunked, is_causal, {label}")
        variants.append(JaxVariant(name, length, description,
                                   attention_fn(structured, blocks=blocks),
                                   make_inputs(length), {}, min_seconds=args.min_seconds,
                                   blocks_visited=block_visits(length, structured, {}, blocks)))
    by_name = {v.name: v for v in variants}
    log = timed_rounds(variants, args.rounds)
    ratios = {"causal_over_window": ratio(by_name["causal"], by_name["window"]),
              "window_2t_over_t": ratio(by_name["window_2t"], by_name["window"])}
    for bq, bk in args.blocks:
        ratios[f"causal_over_window_{bq}x{bk}"] = ratio(by_name["causal"],
                                                        by_name[f"window_{bq}x{bk}"])
    return {"variants": [v.record() for v in variants], "ratios": ratios, "rounds": log}


def xla_fits(attend, inputs, arrays) -> tuple[bool, dict | None]:
    """Whether XLA's buffer assignment of the fwd+bwd program fits in half the available
    memory (compiled, not run)."""
    compiled, _, _ = compile_program(attend, inputs, arrays, backward=True)
    sizes = bench.xla_memory(compiled)
    available = _available_memory_bytes() or 0
    return sizes is not None and sizes["total_bytes"] < available / 2, {
        **(sizes or {}), "available_bytes": available}


def documents_group(args) -> dict:
    t, length = args.length, args.doc_length
    inputs = make_inputs(t)
    seg = {"query_segment_ids": document_ids(t, length)}
    dense = {"mask": dense_document_mask(t, length, causal=False)}
    dense_causal = {"mask": dense_document_mask(t, length, causal=True)}
    docs = f"{t // length} documents of {length}"
    specs = [
        ("docs", {}, seg, "chunked", f"{docs}, query_segment_ids"),
        ("docs_dense", {}, dense, "chunked", f"{docs}, dense bool mask [1, 1, T, T]"),
        ("docs_causal", {"is_causal": True}, seg, "chunked",
         f"{docs}, query_segment_ids, is_causal"),
        ("docs_causal_dense", {}, dense_causal, "chunked",
         f"{docs}, dense bool mask (documents AND causal) [1, 1, T, T]"),
        ("docs_causal_dense_is_causal", {"is_causal": True}, dense, "chunked",
         f"{docs}, dense bool document mask + is_causal (causal blocks still skipped)"),
    ]
    skipped = {}
    for name, structured, arrays in (("xla_docs_dense", {}, dense),
                                     ("xla_docs_causal_dense", {}, dense_causal)):
        fits, sizes = xla_fits(attention_fn(structured, "xla"), inputs, arrays)
        if fits:
            specs.append((name, structured, arrays, "xla", f"{docs}, dense bool mask, xla"))
        else:
            skipped[name] = {"reason": "XLA's buffer assignment exceeds half the available "
                                       "memory", **(sizes or {})}
    variants = [JaxVariant(name, t, description, attention_fn(structured, implementation),
                           inputs, arrays, min_seconds=args.min_seconds,
                           blocks_visited=(block_visits(t, structured, arrays)
                                           if implementation == "chunked" else None))
                for name, structured, arrays, implementation, description in specs]
    by_name = {v.name: v for v in variants}
    for name in ("docs_dense", "docs_causal_dense", "docs_causal_dense_is_causal",
                 *(n for n in ("xla_docs_dense", "xla_docs_causal_dense") if n in by_name)):
        reference = by_name["docs" if "causal" not in name else "docs_causal"]
        diff = jnp.max(jnp.abs(jnp.stack(by_name[name].output) - jnp.stack(reference.output)))
        by_name[name].info["max_abs_grad_diff_vs_structured"] = float(diff)
    log = timed_rounds(variants, args.rounds)
    ratios = {"docs_dense_over_structured": ratio(by_name["docs_dense"], by_name["docs"]),
              "docs_causal_dense_over_structured": ratio(by_name["docs_causal_dense"],
                                                         by_name["docs_causal"]),
              "docs_causal_dense_is_causal_over_structured": ratio(
                  by_name["docs_causal_dense_is_causal"], by_name["docs_causal"])}
    for name in ("xla_docs_dense", "xla_docs_causal_dense"):
        if name in by_name:
            ratios[f"{name}_over_structured"] = ratio(
                by_name[name], by_name["docs_causal" if "causal" in name else "docs"])
    return {"variants": [v.record() for v in variants], "ratios": ratios, "rounds": log,
            "skipped": skipped}


def flex_group(args, workdir: Path) -> dict:
    """JAX forward against FlexAttention's, same q, k, v and masks, interleaved rounds."""
    t, w = args.length, args.window
    inputs = make_inputs(t)
    cases = {"window": ({"is_causal": True, "local_window_size": (w - 1, 0)}, {}),
             "docs": ({}, {"query_segment_ids": document_ids(t, args.doc_length)}),
             "docs_causal": ({"is_causal": True},
                             {"query_segment_ids": document_ids(t, args.doc_length)})}
    with tempfile.TemporaryDirectory() as folder:
        for name, x in zip("qkv", inputs[:3], strict=False):
            np.save(Path(folder) / f"{name}.npy", np.asarray(x))
        peer = Peer(args.peer, Path(folder), args, workdir / "peer_stderr.log")
        try:
            variants = []
            for case, (structured, arrays) in cases.items():
                ours = JaxVariant(f"jax_fwd_{case}", t, f"chunked forward, {case}",
                                  attention_fn(structured), inputs, arrays, backward=False,
                                  min_seconds=args.min_seconds,
                                  blocks_visited=block_visits(t, structured, arrays))
                theirs = PeerVariant(f"flex_fwd_{case}", t, f"flex_attention forward, {case}",
                                     peer, case, min_seconds=args.min_seconds)
                out = np.load(Path(folder) / f"out_{case}.npy")
                diff = np.max(np.abs(out - np.asarray(ours.output)))
                theirs.info["max_abs_diff_vs_jax"] = float(diff)
                variants += [ours, theirs]
            log = timed_rounds(variants, args.rounds)
        finally:
            peer.close()
    by_name = {v.name: v for v in variants}
    ratios = {f"flex_over_jax_fwd_{c}": ratio(by_name[f"flex_fwd_{c}"], by_name[f"jax_fwd_{c}"])
              for c in cases}
    header = {k: peer.header[k] for k in ("peer", "backward", "torch_threads", "versions",
                                          "shape_bhtd")}
    return {"peer": header, "variants": [v.record() for v in variants], "ratios": ratios,
            "rounds": log}


# --------------------------------------------------------------------------- memory


def memory_child(mode: str, t: int, window: int) -> dict:
    """Run in a fresh process: RSS after importing jax and allocating the inputs, XLA's
    buffer assignment of the causal-window program, and the process's peak RSS."""
    inputs = make_inputs(t, count=4 if mode == "fwdbwd" else 3)
    baseline_rss = bench.status_bytes("VmRSS")
    baseline_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    attend = attention_fn({"is_causal": True, "local_window_size": (window - 1, 0)})
    compiled, args, compile_s = compile_program(attend, inputs, {}, backward=mode == "fwdbwd")
    compiled_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tic = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return {"mode": mode, "t": t, "window": window, "seconds": round(time.perf_counter() - tic, 3),
            "compile_s": round(compile_s, 2),
            "baseline_rss_bytes": baseline_rss, "baseline_maxrss_bytes": baseline_max,
            "maxrss_after_compile_bytes": compiled_max,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_vmhwm_bytes": bench.status_bytes("VmHWM"),
            "inputs_bytes": sum(x.nbytes for x in inputs),
            "baseline_note": "RSS after importing jax and generating the inputs (VmRSS); "
                             "baseline_maxrss: the high-water mark at that point",
            "xla_memory": bench.xla_memory(compiled),
            "largest_buffer": largest_buffer(compiled, t, t)}


def memory_group(args) -> dict:
    """The two memory children. Run before this process allocates anything: on Linux a
    child's ``ru_maxrss`` starts from its parent's RSS at the fork (exec keeps the larger of
    the two), so a child of a big parent would report the parent's size. Each child also
    reports ``VmHWM`` (the high-water mark of its own address space, which exec resets)."""
    rows = []
    parent_rss = bench.status_bytes("VmRSS")
    for mode, t in (("fwdbwd", args.memory_fwdbwd_length), ("fwd", args.memory_fwd_length)):
        command = [sys.executable, "-m", "benchmarks.structured_masks", "--memory-child", mode,
                   "--length", str(t), "--window", str(args.window)]
        with bench.NeighbourLoad() as load:
            out = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                                 cwd=Path(__file__).resolve().parents[1])
        if out.returncode:
            rows.append({"mode": mode, "t": t, "error": out.stderr[-2000:]})
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        # the child is "other" to this process's monitor; its CPU time is the row's own
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        row["parent_rss_at_launch_bytes"] = parent_rss
        row["machine_busy_cores_incl_child"] = round(load.cores, 3)
        rows.append(row)
    return {"rows": rows}


# --------------------------------------------------------------------------- report


def verdicts(result: dict) -> dict:
    out = {}
    ratios = {**result["sliding_window"]["ratios"], **result["documents"]["ratios"]}
    for name, (op, bar) in BARS.items():
        if name not in ratios:  # its group was skipped
            continue
        value = ratios[name]["median"]
        out[name] = {"value": round(value, 3), "bar": f"{op} {bar}",
                     "met": value >= bar if op == ">=" else value <= bar}
    for row in result["memory"]["rows"]:
        if "error" in row:
            out[f"memory_{row['mode']}"] = {"value": None, "met": False, "error": True}
            continue
        if row["mode"] == "fwdbwd":
            out[f"peak_rss_fwdbwd_t{row['t']}"] = {"value": row["peak_rss_bytes"],
                                                   "bar": "< 2e9 bytes",
                                                   "met": row["peak_rss_bytes"] < 2e9}
        out[f"no_txs_buffer_{row['mode']}_t{row['t']}"] = {
            "value": row["largest_buffer"]["elements"],
            "bar": f"< T*S/8 = {row['largest_buffer']['t_s_over_8']}",
            "met": row["largest_buffer"]["no_txs_buffer"]}
    return out


def _mib(x) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}"


def markdown(result: dict) -> str:
    lines = ["| group | variant | T | median s | per-round s | neighbour cores | temp MiB | "
             "largest buffer | blocks visited (masked) / all |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group in ("sliding_window", "documents", "flex_forward"):
        for v in result.get(group, {}).get("variants", []):
            temp = (v.get("xla_memory") or {}).get("temp_bytes")
            big = v.get("largest_buffer", {}).get("shape", "-")
            b = v.get("blocks_visited")
            visits = "-" if b is None else (f"{b['visited']} ({b['masked']}) / {b['of']} "
                                            f"of {b['block_q']}x{b['block_k']}")
            lines.append(f"| {group} | {v['name']} | {v['t']} | {v['seconds_median']:.4g} | "
                         f"{', '.join(f'{s:.4g}' for s in v['round_seconds'])} | "
                         f"{', '.join(f'{c:.2f}' for c in v['neighbour_cores'])} | "
                         f"{_mib(temp)} | {big} | {visits} |")
    lines += ["", "| ratio | median | ci95 | per round |", "|---|---|---|---|"]
    for group in ("sliding_window", "documents", "flex_forward"):
        for name, r in result.get(group, {}).get("ratios", {}).items():
            lines.append(f"| {name} | {r['median']:.3f} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}"
                         f" | {', '.join(f'{x:.3f}' for x in r['per_round'])} |")
    lines += ["", "| memory | T | baseline RSS MiB | peak RSS (ru_maxrss) MiB | VmHWM MiB | "
              "XLA temp MiB | largest buffer (elements) | T*S/8 |",
              "|---|---|---|---|---|---|---|---|"]
    for row in result["memory"]["rows"]:
        if "error" in row:
            lines.append(f"| {row['mode']} | {row['t']} | error | | | | | |")
            continue
        lines.append(f"| {row['mode']} | {row['t']} | {_mib(row['baseline_rss_bytes'])} | "
                     f"{_mib(row['peak_rss_bytes'])} | {_mib(row['peak_vmhwm_bytes'])} | "
                     f"{_mib((row['xla_memory'] or {}).get('temp_bytes'))} | "
                     f"{row['largest_buffer']['shape']} ({row['largest_buffer']['elements']}) | "
                     f"{row['largest_buffer']['t_s_over_8']} |")
    lines += ["", "| bar | value | rule | met |", "|---|---|---|---|"]
    for name, v in result["verdicts"].items():
        lines.append(f"| {name} | {v['value']} | {v.get('bar', '')} | {v['met']} |")
    if "flex_forward" in result:
        backward = result["flex_forward"]["peer"]["backward"]
        lines += ["", f"FlexAttention backward on the CPU: {backward}"]
    elif "flex_forward_skipped" in result:
        lines += ["", f"FlexAttention peer: {result['flex_forward_skipped']}"]
    for name, why in result["documents"].get("skipped", {}).items():
        lines.append(f"{name}: not run, XLA temp {_mib(why.get('temp_bytes'))} MiB, total "
                     f"{_mib(why.get('total_bytes'))} MiB vs "
                     f"{_mib(why.get('available_bytes'))} MiB available")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.structured_masks",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small shapes: T=2048 (2T=4096), documents of 128, memory at "
                             "16384/32768, 3 rounds")
    parser.add_argument("--length", type=int, default=None, help="T (default 16384)")
    parser.add_argument("--window", type=int, default=512,
                        help="keys per query of the causal window, itself included")
    parser.add_argument("--doc-length", type=int, default=None, help="default 1024")
    parser.add_argument("--memory-fwdbwd-length", type=int, default=None, help="default 65536")
    parser.add_argument("--memory-fwd-length", type=int, default=None, help="default 131072")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (3 with --quick)")
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="each round of a variant repeats its call this long (once at least)")
    parser.add_argument("--blocks", default="",
                        help="extra window variants with chunked_attention block sizes, "
                             "e.g. '128x512,256x256'")
    parser.add_argument("--peer", default="/tmp/torchenv/bin/python",
                        help="python with torch 2.13 for the FlexAttention peer ('' for none)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the peer")
    parser.add_argument("--skip", default="", help="comma-separated groups not to run "
                        "(sliding_window, documents, flex_forward, memory)")
    parser.add_argument("--workdir", default=None, help="default runs/structured_masks/<time>")
    parser.add_argument("--memory-child", choices=("fwd", "fwdbwd"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = {"length": 2048, "doc_length": 128, "memory_fwdbwd_length": 16384,
             "memory_fwd_length": 32768, "rounds": 3}
    full = {"length": 16384, "doc_length": 1024, "memory_fwdbwd_length": 65536,
            "memory_fwd_length": 131072, "rounds": 5}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.blocks = [tuple(int(x) for x in b.split("x")) for b in args.blocks.split(",") if b]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.length, args.window)))
        return {}
    workdir = Path(args.workdir or Path("runs/structured_masks")
                   / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    workdir.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    config = {k: v for k, v in vars(args).items() if k != "memory_child"}
    result = {"rule": RULE, "config": config, "shape": {"batch": BATCH, "heads": HEADS,
              "head_dim": HEAD_DIM, "dtype": "float32"},
              "window_convention": f"local_window_size=({args.window - 1}, 0) with is_causal: "
                                   f"query i sees keys i-{args.window - 1}..i ({args.window} keys)",
              "default_blocks": {"causal": ops.default_blocks(args.length, args.length, True),
                                 "non_causal": ops.default_blocks(args.length, args.length, False)},
              "environment": bench.environment()}
    empty = {"variants": [], "ratios": {}, "rounds": []}
    for name, run in (("memory", lambda: memory_group(args)),  # first: see memory_group
                      ("sliding_window", lambda: sliding_window_group(args)),
                      ("documents", lambda: documents_group(args))):
        if name in skip:
            result[name] = {**empty, "rows": []}
            continue
        print(f"{name} ...", file=sys.stderr, flush=True)
        result[name] = run()
    if "flex_forward" in skip or not args.peer:
        result["flex_forward_skipped"] = "not asked for"
    elif not Path(args.peer).exists():
        result["flex_forward_skipped"] = f"no python at {args.peer}"
    else:
        print("flex_forward ...", file=sys.stderr, flush=True)
        result["flex_forward"] = flex_group(args, workdir)
    result["verdicts"] = verdicts(result)
    result["loadavg_end"] = list(os.getloadavg())
    table = markdown(result)
    (workdir / "results.json").write_text(json.dumps(result, indent=1))
    (workdir / "table.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten to {workdir}/results.json and table.md")
    result["workdir"] = str(workdir)
    return result


if __name__ == "__main__":
    main()
