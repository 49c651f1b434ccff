"""PyTorch peer for benchmarks/structured_masks.py: FlexAttention with block masks on the CPU.

Not part of attnjax (which never imports torch): ``benchmarks.structured_masks`` starts this
file once, with the python of a separate torch environment (torch 2.13.0+cpu, nothing
else), and asks it for one timed call per round, so that its rounds interleave with the
JAX ones in the same run:

    /tmp/torchenv/bin/python benchmarks/peers/flex_attention_torch.py \\
        --inputs DIR --window-left 511 --doc-length 1024 --threads 2

``DIR`` holds ``q.npy``, ``k.npy``, ``v.npy`` (``[B, T, H, D]`` float32, attnjax's layout,
written by the JAX side, so both attend over the same numbers). The masks, as
``create_block_mask`` mask_mods (FlexAttention's default 128 x 128 blocks):

* ``window``: causal sliding window, ``kv <= q and q - kv <= left`` (jax.nn's
  ``local_window_size=(left, 0)`` with ``is_causal``);
* ``docs``: ``doc[q] == doc[kv]`` with ``doc = position // doc_length``;
* ``docs_causal``: ``docs`` and ``kv <= q``.

Each is ``torch.compile(flex_attention)``-ed and warmed up before the first request; the
forward output of each is written to ``DIR/out_<case>.npy`` for the JAX side to compare.
Backward is tried once on a small input and its error (if any) is kept: FlexAttention on
the CPU has no backward in this torch. The first stdout line is a JSON record
(``versions``, ``torch_threads``, ``compile_s`` per case, ``backward``: "ok" or the exact
error); then, for each line ``<case>`` read on stdin, one timed forward and one JSON line
``{"case", "seconds", "cpu_seconds"}`` (``cpu_seconds``: this process's CPU time in the
call, all threads, so the caller can tell its load from the neighbours'). ``quit`` ends it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

CASES = ("window", "docs", "docs_causal")


def mask_mods(left: int, doc_length: int):
    def window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx <= left)

    def docs(b, h, q_idx, kv_idx):
        return (q_idx // doc_length) == (kv_idx // doc_length)

    def docs_causal(b, h, q_idx, kv_idx):
        return docs(b, h, q_idx, kv_idx) & (kv_idx <= q_idx)

    return {"window": window, "docs": docs, "docs_causal": docs_causal}


def backward_probe() -> str:
    """"ok", or the exception FlexAttention raises for a backward on the CPU (T = 256).

    Run in a subprocess of its own: once the compiled call has raised, this process's
    dynamo runs flex_attention eagerly (the dense reference, ~20x slower) from then on."""
    code = (
        "import torch\n"
        "from torch.nn.attention.flex_attention import create_block_mask, flex_attention\n"
        "q, k, v = (torch.randn(1, 2, 256, 64, requires_grad=True) for _ in range(3))\n"
        "bm = create_block_mask(lambda b, h, i, j: j <= i, None, None, 256, 256, device='cpu')\n"
        "torch.compile(flex_attention)(q, k, v, block_mask=bm).sum().backward()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    if out.returncode == 0:
        return "ok"
    return out.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", required=True, help="folder with q.npy, k.npy, v.npy")
    parser.add_argument("--window-left", type=int, required=True)
    parser.add_argument("--doc-length", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.inputs)
    # [B, T, H, D] -> FlexAttention's [B, H, T, D]
    q, k, v = (torch.from_numpy(np.load(folder / f"{n}.npy")).transpose(1, 2).contiguous()
               for n in ("q", "k", "v"))
    t = q.shape[2]
    attention = torch.compile(flex_attention)
    mods = mask_mods(args.window_left, args.doc_length)
    record = {"peer": "torch.compile(flex_attention) + create_block_mask",
              "shape_bhtd": list(q.shape), "backward": backward_probe(),
              "compile_s": {}, "block_mask": {}}
    calls = {}
    with torch.no_grad():
        for case in args.cases.split(","):
            block_mask = create_block_mask(mods[case], None, None, t, t, device="cpu")
            call = (lambda bm: lambda: attention(q, k, v, block_mask=bm))(block_mask)
            start = time.perf_counter()
            out = call()
            record["compile_s"][case] = round(time.perf_counter() - start, 2)
            np.save(folder / f"out_{case}.npy", out.transpose(1, 2).contiguous().numpy())
            sparsity = round(float(block_mask.sparsity()), 2)  # % of blocks skipped
            record["block_mask"][case] = {"block_size": list(block_mask.BLOCK_SIZE),
                                          "sparsity_percent": sparsity}
            calls[case] = call
    record.update({
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
    })
    print(json.dumps(record), flush=True)
    with torch.no_grad():
        for line in sys.stdin:
            case = line.strip()
            if case == "quit":
                break
            cpu, start = time.process_time(), time.perf_counter()
            calls[case]()
            seconds = time.perf_counter() - start
            print(json.dumps({"case": case, "seconds": seconds,
                              "cpu_seconds": time.process_time() - cpu}), flush=True)


if __name__ == "__main__":
    main()
