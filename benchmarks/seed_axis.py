"""The seed axis: S seeds trained as one vmapped program vs S runs one after another.

Same config, same seeds, same step counts, in one process; rounds alternate between the two
ways so a noisy neighbour on this shared machine slows both alike. Each way's time is the
whole ``attnjax.train.train`` call (initialisation, compilation, every step), as a user
waits for it; "sequential" is S separate ``train`` calls of one seed each, each compiling its
own step, as S runs of a script would. The model is the size the experiments train: an
encoder classifier (d=64, 2 layers, 4 heads, MLP 128) on the recall task (length 48,
batch 64).

    python -m benchmarks.seed_axis [--seeds 5] [--steps 300] [--rounds 2]
                                   [--model-dim 64] [--batch-size 64] [--length 48]

Prints seconds per way and round, the neighbour load (other processes' CPU, in cores), the
ratio sequential / vmapped, and vmapped / one run (S seeds for the price of ...).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from attnjax import bench, nn, train
from attnjax.data import recall


def setup(length: int, model_dim: int):
    arrays = recall.recall_batch(0, 4096, length, num_keys=8, num_noise=16)
    model = nn.PositionClassifier(
        nn.Encoder(nn.TransformerConfig(
            vocab_size=recall.vocab_size(8, 16), model_dim=model_dim, num_heads=4,
            num_layers=2, mlp_dim=2 * model_dim, max_len=length, dropout_rate=0.1)),
        num_classes=recall.vocab_size(8, 16))
    return model, arrays


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_axis",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--model-dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    model, arrays = setup(args.length, args.model_dim)
    config = {"num_steps": args.steps, "batch_size": args.batch_size, "learning_rate": 1e-3,
              "warmup_steps": min(50, args.steps), "log_every": 50,
              "checkpoint_every": args.steps}
    seeds = list(range(args.seeds))

    def vmapped():
        return train.train_classifier(model, arrays, position_key="last", config=config,
                                      seeds=seeds, vmap_seeds=True, progress=False)

    def sequential():
        return [train.train_classifier(model, arrays, position_key="last", config=config,
                                       seeds=[s], progress=False) for s in seeds]

    rows = []
    for r in range(args.rounds):
        order = [("vmapped", vmapped), ("sequential", sequential)]
        for way, call in order if r % 2 == 0 else order[::-1]:
            with bench.NeighbourLoad() as load:
                tic = time.perf_counter()
                out = call()
                seconds = time.perf_counter() - tic
            if way == "vmapped":
                losses = [f["loss"] for f in out.final]
                single = None
            else:
                losses = [o.final[0]["loss"] for o in out]
                single = [o.seconds for o in out]
            rows.append({"round": r, "way": way, "seconds": seconds,
                         "neighbour_cores": load.cores, "final_losses": losses,
                         "per_run_seconds": single})
            print(f"round {r} {way:10s} {seconds:7.1f} s  neighbour load {load.cores:.2f} cores"
                  f"  final losses {np.round(losses, 4).tolist()}", flush=True)
    v = float(np.median([x["seconds"] for x in rows if x["way"] == "vmapped"]))
    s = float(np.median([x["seconds"] for x in rows if x["way"] == "sequential"]))
    one = float(np.median([t for x in rows if x["per_run_seconds"] for t in x["per_run_seconds"]]))
    summary = {"seeds": args.seeds, "steps": args.steps, "model_dim": args.model_dim,
               "batch_size": args.batch_size, "length": args.length, "vmapped_seconds": v,
               "sequential_seconds": s, "one_run_seconds": one,
               "sequential_over_vmapped": s / v, "vmapped_over_one_run": v / one,
               "environment": bench.environment(), "rows": rows}
    print(f"{args.seeds} seeds x {args.steps} steps: vmapped {v:.1f} s, sequential {s:.1f} s "
          f"({s / v:.2f}x), one run {one:.1f} s: vmapped = {v / one:.2f}x one run")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rows", "environment")}))
    return summary


if __name__ == "__main__":
    main()
