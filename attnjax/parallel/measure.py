"""What a compiled program costs each device: XLA's buffer sizes and the bytes its
collectives move, read from the compiled executable (no run, no profiler).

* ``memory(compiled)``: per-device bytes of XLA's buffer assignment
  (``compiled.memory_analysis()``: arguments + outputs + temporaries - aliased); a static
  size, what the program allocates, identical on simulated and real devices of the same
  kind.
* ``collectives(compiled)``: every collective in the optimised HLO, counted as often as it
  runs (instructions inside a ``while`` body times its known trip count; both branches of a
  ``conditional`` are counted, an upper bound), with the bytes each device sends under the
  usual ring algorithms: a ``collective-permute`` sends its buffer once, an ``all-gather``
  ``(g-1)/g`` of its result, a ``reduce-scatter`` ``(g-1)`` times its result, an
  ``all-reduce`` ``2(g-1)/g`` of its buffer, for groups of ``g`` devices.
"""

from __future__ import annotations

import math
import re
from typing import Any

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_OP = re.compile(r"=\s*(.*?)\s+(" + "|".join(KINDS) + r")(?:-start)?\(")
_SHAPE = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")


def memory(compiled: Any) -> dict[str, float]:
    """Per-device bytes of a ``jax.stages.Compiled`` (``jit(f).lower(...).compile()``)."""
    m = compiled.memory_analysis()
    total = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
             - m.alias_size_in_bytes)
    return {"temp_bytes": int(m.temp_size_in_bytes),
            "argument_bytes": int(m.argument_size_in_bytes),
            "output_bytes": int(m.output_size_in_bytes), "total_bytes": int(total)}


def _shape_bytes(text: str) -> int:
    return sum(_DTYPE_BYTES[d] * math.prod(int(x) for x in dims.split(",") if x)
               for d, dims in _SHAPE.findall(text))


def _group_size(line: str, devices: int) -> int:
    if (m := re.search(r"replica_groups=\{\{([\d,]*)\}", line)):
        return len(m.group(1).split(","))
    if (m := re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)):
        return int(m.group(2))
    if (m := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)):
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", m.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", m.group(2)))
    return devices


def _sent(kind: str, size: int, g: int) -> float:
    if g <= 1 and kind != "collective-permute":
        return 0.0
    return {"collective-permute": size, "all-gather": size * (g - 1) / g,
            "reduce-scatter": size * (g - 1), "all-reduce": 2 * size * (g - 1) / g,
            "all-to-all": size * (g - 1) / g}[kind]


def collectives(compiled: Any, devices: int | None = None) -> dict[str, dict[str, float]]:
    """``{kind: {"count", "bytes", "sent_bytes"}}`` per device for one call of ``compiled``
    (or of its HLO text); ``bytes`` is the collectives' result size, ``sent_bytes`` what
    each device sends (see the module docstring). ``devices``: the group size when a
    collective names none (default: all partitions)."""
    text = compiled if isinstance(compiled, str) else compiled.as_text()
    if devices is None:
        m = re.search(r"num_partitions=(\d+)", text)
        devices = int(m.group(1)) if m else 1
    own: dict[str, list[tuple[str, int, float]]] = {}
    calls: dict[str, list[tuple[str, int]]] = {}
    entry, current = None, None
    for line in text.splitlines():
        if (h := _HEADER.match(line)):
            current = h.group(1)
            own[current], calls[current] = [], []
            if line.startswith("ENTRY"):
                entry = current
            continue
        if current is None or "=" not in line:
            continue
        if (op := _OP.search(line)) and "-done" not in line.split("=", 1)[1].split("(")[0]:
            kind = op.group(2)
            size = _shape_bytes(op.group(1))
            own[current].append((kind, size, _sent(kind, size, _group_size(line, devices))))
        if " while(" in line and (body := re.search(r"body=%?([\w.\-]+)", line)):
            trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
            calls[current].append((body.group(1), int(trip.group(1)) if trip else 1))
        if (branches := re.search(r"branch_computations=\{([^}]*)\}", line)):
            calls[current] += [(b.strip().lstrip("%"), 1) for b in branches.group(1).split(",")]
        for callee in re.findall(r"(?:calls|to_apply|true_computation|false_computation)="
                                 r"%?([\w.\-]+)", line):
            calls[current].append((callee, 1))
    totals = {k: {"count": 0.0, "bytes": 0.0, "sent_bytes": 0.0} for k in KINDS}

    def visit(name: str, times: int, depth: int = 0) -> None:
        if depth > 50 or name not in own:
            return
        for kind, size, sent in own[name]:
            totals[kind]["count"] += times
            totals[kind]["bytes"] += times * size
            totals[kind]["sent_bytes"] += times * sent
        for callee, n in calls[name]:
            visit(callee, times * n, depth + 1)

    if entry is not None:
        visit(entry, 1)
    return {k: v for k, v in totals.items() if v["count"]}
