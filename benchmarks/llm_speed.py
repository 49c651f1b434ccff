"""SmolLM2-135M-Instruct on the CPU: attnjax vs transformers (PyTorch), prefill and decode.

The same GGUF file, the same 64 prompt ids (``benchmarks/peers/smollm2_torch.py``'s
paragraph, tokenized by transformers and printed by the peer), float32 weights, batch 1.

* attnjax (this process): ``pretrained.load_llama`` (read + dequantise + tokenizer),
  ``first_call_s`` (the first prefill: tracing + XLA compilation), ``prefill_tokens_per_s``
  (one ``sampling.prefill`` call over the prompt, KV cache written), and
  ``decode_tokens_per_s``: greedy ``sampling.generate`` of N + 1 tokens minus that of 1
  token (so N cached one-token steps inside one jitted ``lax.while_loop``), end-of-sequence
  ignored, as the peer's loop does. First calls of the decode loop are timed apart too.
* transformers (a subprocess with the python of a separate torch environment, ``--peer``;
  PyTorch is never imported here): ``AutoModelForCausalLM.from_pretrained(gguf_file=...)``
  in float32 with eager attention (and sdpa), the same measurements with a manual greedy
  loop over ``past_key_values``.

Rounds alternate attnjax / torch / attnjax, and the load of other processes is logged for
every attnjax round (``bench.NeighbourLoad``) and as the 1-minute load average around the
peer's run, so that a busy machine shows in the numbers. Both use ``--threads`` threads
(XLA's CPU client uses every core of this 2-core machine; torch.set_num_threads(2)).

    python -m benchmarks.llm_speed [--peer /work/venvs/torchref/bin/python] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax

from attnjax import bench, pretrained
from attnjax.train import sampling

PEER = Path(__file__).parent / "peers" / "smollm2_torch.py"


def _timed(call) -> float:
    start = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - start


def attnjax_round(model, ids: list[int], new_tokens: int, repeats: int) -> dict:
    config, params = model.config, model.params
    cache_len = len(ids) + new_tokens + 1

    def prefill():
        return sampling.prefill(config, params, jax.numpy.asarray([ids]), cache_len=cache_len)

    def gen(n):
        return sampling.generate(config, params, ids, n, cache_len=cache_len)

    first = {"prefill_s": _timed(prefill), "generate_1_s": _timed(lambda: gen(1)),
             f"generate_{new_tokens + 1}_s": _timed(lambda: gen(new_tokens + 1))}
    with bench.NeighbourLoad() as load:
        prefill_s = [_timed(prefill) for _ in range(repeats)]
        one = [_timed(lambda: gen(1)) for _ in range(repeats)]
        full = [_timed(lambda: gen(new_tokens + 1)) for _ in range(repeats)]
    decode_s = [f - o for f, o in zip(full, one, strict=True)]
    return {
        "first_calls_s": {k: round(v, 3) for k, v in first.items()},
        "prefill_s": [round(s, 4) for s in prefill_s],
        "prefill_tokens_per_s": round(len(ids) / statistics.median(prefill_s), 2),
        "decode_s": [round(s, 4) for s in decode_s],
        "decode_tokens_per_s": round(new_tokens / statistics.median(decode_s), 2),
        "decode_ids": gen(new_tokens + 1)[:new_tokens],  # as the peer: the first token too
        "neighbour_cores": round(load.cores, 3),
    }


def peer_round(python: str, gguf: Path, args) -> dict:
    command = [python, str(PEER), "--gguf", str(gguf), "--prompt-tokens", str(args.prompt_tokens),
               "--new-tokens", str(args.new_tokens), "--threads", str(args.threads),
               "--repeats", str(args.repeats)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"the torch peer failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default="/work/venvs/torchref/bin/python",
                        help="python of an environment with torch + transformers + gguf")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    gguf = pretrained.smollm2_path()
    tic = time.perf_counter()
    model = pretrained.load_llama(gguf)
    load_s = time.perf_counter() - tic

    peer = None
    if Path(args.peer).exists():
        peer = peer_round(args.peer, gguf, args)
        ids = peer["prompt_ids"]
    else:
        print(f"no peer python at {args.peer}: attnjax only", file=sys.stderr)
        ids = model.tokenize(" ".join(["The history of the lighthouse"] * 20))
    ids = ids[: args.prompt_tokens]
    rounds = [attnjax_round(model, ids, args.new_tokens, args.repeats)]
    if peer is not None:
        second_peer = peer_round(args.peer, gguf, args)
        rounds.append(attnjax_round(model, ids, args.new_tokens, args.repeats))
    ours = {
        "load_s": round(load_s, 2),
        "first_calls_s": rounds[0]["first_calls_s"],
        "prefill_tokens_per_s": statistics.median(r["prefill_tokens_per_s"] for r in rounds),
        "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in rounds),
        "rounds": rounds,
    }
    result = {"environment": bench.environment(args.threads), "attnjax": ours,
              "loadavg_1m_end": round(os.getloadavg()[0], 2)}
    if peer is not None:
        peers = [peer, second_peer]
        result["torch"] = peers
        for impl in ("eager", "sdpa"):
            if impl not in peer:
                continue
            prefill = statistics.median(p[impl]["prefill_tokens_per_s"] for p in peers)
            decode = statistics.median(p[impl]["decode_tokens_per_s"] for p in peers)
            result[f"ratio_vs_{impl}"] = {
                "prefill": round(ours["prefill_tokens_per_s"] / prefill, 2),
                "decode": round(ours["decode_tokens_per_s"] / decode, 2),
                "torch_prefill_tokens_per_s": prefill, "torch_decode_tokens_per_s": decode,
                "torch_load_s": statistics.median(p["load_s"] for p in peers),
                "torch_first_call_s": peer[impl]["first_call_s"],
                "same_greedy_tokens": peer[impl]["decode_ids"] == rounds[0]["decode_ids"],
            }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
