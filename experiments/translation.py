"""Translation with cross-attention: does each output word look back at the input words it
corresponds to?

Trains an encoder-decoder transformer and parameter-matched GRU/LSTM seq2seq baselines
(with and without additive attention) on the toy English -> French-like task, whose gold
word alignment is known, or on SCAN (Lake & Baroni 2018). Every arm trains every seed with
the same learning-rate grid (one vmapped program per arm); per seed the rate with the best
dev exact match is kept. Data is split train / dev / test: the best cross-attention head
is chosen by its AER on dev and reported on test, next to two aligners that need no
attention: the monotonic diagonal and IBM Model 1 (Brown et al. 1993) trained on the
train pairs.

    python -m experiments.translation                                   # full, 5 seeds
    python -m experiments.translation --config configs/translation.py:tour
    python -m experiments.translation --config configs/translation.py:scan_simple
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from attnjax import analysis, experiment, nn, stats, train, viz
from attnjax.analysis.alignment import IBMModel1
from attnjax.data import translation
from attnjax.train.loop import make_batch_fn
from experiments import REGISTRY

NAME = "translation"
CLAIM = REGISTRY[NAME].claim

RULE = (
    "Toy translation (gold alignment known), per seed: the claim passes if (a) the "
    "transformer's own test exact match is >= {min_exact_match:.0%} (learning rate chosen "
    "on dev exact match from the grid {learning_rates}), and (b) the test AER of its "
    "cross-attention head chosen by dev AER is at least {diagonal_margin:.2f} below the "
    "monotonic diagonal's, and (c) at least {ibm1_margin:.2f} below IBM Model 1's (EM on the "
    "train pairs, {ibm1_iterations} iterations, NULL word). Seeds: the claim holds if a seed "
    "passes in >= {holds_at:.0%} of seeds, does not hold if in <= {fails_at:.0%}, mixed "
    "otherwise. The RNN arms (parameter-matched, same grid) are reported, not judged."
)
SCAN_RULE = (
    "SCAN {scan_split} (no gold alignment: accuracy only, the alignment part of the claim is "
    "not tested), per seed: the transformer's test exact match is >= {min_exact_match:.0%} "
    "(learning rate chosen on a dev split of the train half, grid {learning_rates}). The "
    "claim holds if a seed passes in >= {holds_at:.0%} of seeds, does not hold if in <= "
    "{fails_at:.0%}, mixed otherwise. Lake & Baroni 2018's RNN results are shown beside ours."
)

# Lake & Baroni 2018 (ICML), "Generalization without systematicity", read from the paper's
# text (ar5iv.labs.arxiv.org/html/1711.00350, sec. 3, Experiments 1-3). Accuracy = exact
# match of the whole action sequence on the split's test set, mean over 5 training runs.
# "Overall-best" is the one architecture chosen across all experiments (a 2-layer LSTM,
# 200 hidden units per layer, no attention, dropout 0.5); "best" is the top architecture
# of that split alone, so the two rows of a split are different networks.
LAKE_BARONI = {
    "simple": (
        ("overall-best network (2-layer LSTM, 200 units, no attention, dropout 0.5)", 0.997,
         "Experiment 1: \"The best-overall network achieved 99.7% correct.\""),
        ("top architecture for the split (LSTM, no attention, 2 x 200 units, no dropout)",
         0.998, "Experiment 1: \"The top-performing network for this experiment achieved "
         "99.8% correct on the test set\""),
    ),
    "length": (
        ("overall-best network", 0.138,
         "Experiment 2: \"The overall-best model achieves 13.8% accuracy.\""),
        ("top architecture for the split (GRU with attention, one 50-unit layer, dropout 0.5)",
         0.208, "Experiment 2: \"The best result (20.8% on average, again over 5 runs) is "
         "achieved by a GRU with attention\""),
    ),
    "addprim_jump": (
        ("overall-best network", 0.0008,
         "Experiment 3: \"The overall-best model reached 0.08% accuracy.\""),
        ("top architecture for the split (LSTM, attention, one 100-unit layer, dropout 0.1)",
         0.012, "Experiment 3: \"The best performance was 1.2% accuracy\""),
    ),
    "addprim_turn_left": (
        ("overall-best network", 0.900,
         "Experiment 3: \"The overall-best model achieved 90.0% accuracy.\""),
        ("top architecture for the split (GRU, attention, one 100-unit layer, dropout 0.1)",
         0.903, "Experiment 3: \"(90.3% accuracy)\""),
    ),
}
PUBLISHED_NOTE = (
    "Lake & Baroni 2018 (ICML), sec. 3, read from the paper's text (ar5iv 1711.00350): test "
    "exact match of their RNN seq2seq models, mean over 5 runs, trained for 100k presentations "
    "with Adam 1e-3 and 50% teacher forcing. Ours: a transformer and a GRU with additive "
    "attention on the same official split, learning rate chosen on a dev part of the train "
    "half, greedy decoding."
)


def published(config: ml_collections.ConfigDict, metrics: dict) -> list[dict]:
    """Lake & Baroni's two figures for this SCAN split beside our arms' test exact match."""
    ours = "; ".join(f"{arm} {metrics[f'{arm}_exact_match']['mean']:.3f}"
                     for arm in config.models if f"{arm}_exact_match" in metrics)
    return [{"source": "Lake & Baroni 2018 (ICML), sec. 3", "quote": quote,
             "metric": f"test exact match, {what}",
             "value": value, "ours": ours,
             "setting": f"SCAN {config.scan_split} split; theirs RNNs (5 runs), ours "
                        f"{len(config.seeds)} seeds"}
            for what, value, quote in LAKE_BARONI.get(config.scan_split, ())
            if config.task == "scan"]


def rule_text(config: ml_collections.ConfigDict) -> str:
    """The pre-registered rule with the config's thresholds."""
    fields = dict(
        min_exact_match=config.rule.min_exact_match, diagonal_margin=config.rule.diagonal_margin,
        ibm1_margin=config.rule.ibm1_margin, ibm1_iterations=config.ibm1.iterations,
        learning_rates=list(config.learning_rates), holds_at=config.verdict.holds_at,
        fails_at=config.verdict.fails_at, scan_split=config.scan_split,
    )
    return (SCAN_RULE if config.task == "scan" else RULE).format(**fields)


# --------------------------------------------------------------------------- models


def _count_params(model, example: dict) -> int:
    shapes = jax.eval_shape(
        lambda key: model.init(key, example["source"][:2], example["target_in"][:2])["params"],
        jax.random.key(0))
    return train.num_params(shapes)


def build_model(name: str, config, source_vocab: int, target_vocab: int, example: dict,
                target_params: int | None = None):
    """``(model, num_params, hidden_dim)``. An RNN arm with ``rnn.hidden_dim == 0`` gets the
    hidden size (a multiple of ``rnn.hidden_step``) whose parameter count is closest to
    ``target_params``. An RNN's count is a quadratic in the hidden size (recurrent and
    attention matrices are h x h, the output layer h x V), so three counts fit it exactly;
    the chosen size's count is then measured, not extrapolated."""
    if name == "transformer" or config.rnn.hidden_dim or target_params is None:
        model = nn.seq2seq_model(name, config, source_vocab, target_vocab)
        hidden = None if name == "transformer" else int(config.rnn.hidden_dim)
        return model, _count_params(model, example), hidden
    step = int(config.rnn.hidden_step)

    def sized(hidden: int):
        c = ml_collections.ConfigDict(config.to_dict())
        c.rnn.hidden_dim = hidden
        model = nn.seq2seq_model(name, c, source_vocab, target_vocab)
        return model, _count_params(model, example)

    probes = np.array([8.0, 16.0, 32.0])
    a, b, c0 = np.polyfit(probes, [sized(int(h))[1] for h in probes], 2)
    root = (-b + np.sqrt(b * b - 4 * a * (c0 - target_params))) / (2 * a)
    hidden = max(step, int(round(root / step)) * step)
    model, count = sized(hidden)
    if abs(count - target_params) > config.rnn.match_tolerance * target_params:
        raise ValueError(
            f"{name}: no hidden size matches the transformer's {target_params} parameters "
            f"within {config.rnn.match_tolerance:.0%} (closest: {count} at {hidden}); "
            "change rnn.embed_dim or set rnn.hidden_dim")
    return model, count, hidden


def train_arm(name: str, model, tasks: dict, config, run_dir) -> train.TrainResult:
    """Every seed (on its own data draw) x every learning rate of the grid, one program."""
    tc = config.train
    bucket = int(tc.bucket_multiple or 0)
    batch_fns = {
        seed: make_batch_fn(
            task["train"], min(int(tc.batch_size), task["num_train"]),
            train.SeedRngs(seed).int("data_order"),
            bucket_by="target_out" if bucket else None, pad_to_multiple=bucket or 1)
        for seed, task in tasks.items()
    }
    example = next(iter(tasks.values()))["train"]
    return train.train(
        name=name, seeds=list(tasks), config=tc,
        init=lambda key: model.init(key, example["source"][:2], example["target_in"][:2])["params"],
        loss_fn=train.seq2seq_loss_fn(model, label_smoothing=float(tc.label_smoothing)),
        batches=lambda rngs, step: batch_fns[rngs.seed](step),
        run_dir=run_dir, learning_rates=list(config.learning_rates),
        vmap_seeds=config.vmap_seeds if name == "transformer" else config.rnn.vmap_seeds,
        parallel=config.parallel,
        tokens_in=lambda b: int((b["target_out"] != 0).sum()),
    )


# --------------------------------------------------------------------------- scoring


def _lengths(pairs):
    return [len(s) for s, _ in pairs], [len(t) for _, t in pairs]


def score_heads(model, params, task: dict, config) -> dict:
    """Every cross-attention head's AER on dev and test; the head with the lowest dev AER
    is the chosen one, its test AER the reported one. Also the heatmap data of the chosen
    head on the first test sentences."""
    aers = {}
    maps = {}
    for split, golds in (("dev", task["dev_golds"]), ("test", task["golds"])):
        pairs = task[f"{split}_pairs"]
        weights = analysis.cross_attention_maps(model, params, task[split],
                                                config.eval.batch_size)
        aers[split] = analysis.head_aers(weights, golds, *_lengths(pairs))
        maps[split] = weights
    layer, head = (int(i) for i in np.unravel_index(np.argmin(aers["dev"]), aers["dev"].shape))
    heatmaps = []
    for i in range(min(config.eval.num_heatmaps, task["num_test"])):
        source, target = task["test_pairs"][i]
        heatmaps.append({
            "weights": maps["test"][layer, i, head, : len(target), : len(source)].tolist(),
            "source": list(source), "target": list(target),
            "gold": [list(link) for link in task["golds"][i]],
        })
    return {
        "dev_aer_per_layer_head": aers["dev"].tolist(),
        "test_aer_per_layer_head": aers["test"].tolist(),
        "chosen": {"layer": layer, "head": head},
        "chosen_dev_aer": float(aers["dev"][layer, head]),
        "chosen_test_aer": float(aers["test"][layer, head]),
        "heatmaps": heatmaps,
    }


def baseline_aers(task: dict, config) -> dict:
    """Test AER of the two attention-free aligners of one seed's data."""
    pairs, golds = task["test_pairs"], task["golds"]
    diagonal = [analysis.diagonal_links(s, t) for s, t in zip(*_lengths(pairs), strict=True)]
    ibm1 = IBMModel1.train(task["train_pairs"], iterations=int(config.ibm1.iterations),
                           null=bool(config.ibm1.null))
    return {"diagonal_aer": analysis.corpus_aer(diagonal, golds),
            "ibm1_aer": analysis.corpus_aer(ibm1.corpus_links(pairs), golds)}


def _choose_learning_rate(dev: dict[float, dict]) -> float:
    """The rate with the best dev exact match (ties: best dev token accuracy, then the
    first rate of the grid)."""
    return max(dev, key=lambda lr: (dev[lr]["exact_match"], dev[lr]["token_accuracy"]))


def evaluate_arm(name: str, model, result: train.TrainResult, tasks: dict, config) -> list[dict]:
    """Per seed: dev metrics of every rate, the chosen rate, its test metrics and (for an
    attention arm on a task with gold links) its heads' alignment scores."""
    per_seed = []
    evaluate = lambda params, arrays: train.evaluate_seq2seq(
        model, params, arrays, batch_size=config.eval.batch_size,
        beam_size=config.eval.beam_size)[0]
    has_attention = name == "transformer" or name.endswith("_attention")
    for seed, task in tasks.items():
        dev = {lr: evaluate(result.member_params(seed, lr), task["dev"])
               for lr in result_rates(result)}
        lr = _choose_learning_rate(dev)
        params = result.member_params(seed, lr)
        test = evaluate(params, task["test"])
        trained = result.history(seed, lr, "train")
        entry = {
            "seed": seed, "learning_rate": lr,
            "dev_exact_match_by_lr": {f"{r:g}": m["exact_match"] for r, m in dev.items()},
            **{f"test_{k}": v for k, v in test.items()},
            "final_train_loss": trained[-1]["loss"] if trained else None,
        }
        if has_attention and task["golds"] is not None:
            entry["alignment"] = score_heads(model, params, task, config)
        per_seed.append(entry)
    return per_seed


def result_rates(result: train.TrainResult) -> list[float]:
    return list(dict.fromkeys(m.learning_rate for m in result.members))


def _throughput(result: train.TrainResult) -> float | None:
    # The first interval of a fresh run includes compilation; a resumed run has none.
    rates = [r["tokens_per_second"] for r in result.records
             if r.get("split") == "train" and "tokens_per_second" in r]
    rates = rates[len(result.members):] or rates
    return float(np.median(rates)) if rates else None


# --------------------------------------------------------------------------- measure


def _common_widths(tasks: dict) -> None:
    """Right-pads every seed's arrays to one source and one target width (in place), so
    that evaluation and attention capture compile once for all seeds."""
    splits = ("train", "dev", "test")
    widths = {key: max(t[s][key].shape[1] for t in tasks.values() for s in splits)
              for key in ("source", "target_in", "target_out")}
    for task in tasks.values():
        for split in splits:
            task[split] = {k: np.pad(v, ((0, 0), (0, widths[k] - v.shape[1])))
                           for k, v in task[split].items()}


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """Trains and scores every arm on every seed; returns plain numbers."""
    tasks = {int(seed): translation.load_task(config, seed) for seed in config.seeds}
    _common_widths(tasks)
    first = next(iter(tasks.values()))
    source_vocab = max(len(t["source_vocab"]) for t in tasks.values())
    target_vocab = max(len(t["target_vocab"]) for t in tasks.values())
    print(f"{config.task}: per seed {[t['num_train'] for t in tasks.values()]} train / "
          f"{[t['num_dev'] for t in tasks.values()]} dev / "
          f"{[t['num_test'] for t in tasks.values()]} test pairs; vocab (train words only) "
          f"<= {source_vocab} -> {target_vocab}; unknown test words "
          f"{[t['num_unknown_test_words'] for t in tasks.values()]}")
    if config.models[0] != "transformer":
        raise ValueError(f"config.models must start with 'transformer', got {config.models}")
    numbers = {
        "task": config.task, "scan_split": config.scan_split if config.task == "scan" else None,
        "seeds": list(tasks), "learning_rates": list(config.learning_rates),
        "num_train": [t["num_train"] for t in tasks.values()],
        "num_dev": [t["num_dev"] for t in tasks.values()],
        "num_test": [t["num_test"] for t in tasks.values()],
        "num_unknown_test_words": [t["num_unknown_test_words"] for t in tasks.values()],
        "vocab": {"source": source_vocab, "target": target_vocab},
        "arms": {},
    }
    target_params = None
    for name in config.models:
        model, count, hidden = build_model(name, config, source_vocab, target_vocab,
                                           first["train"], target_params)
        if name == "transformer":
            target_params = count
        print(f"{name}: {count:,} parameters" + (f" (hidden {hidden})" if hidden else "")
              + (f", {count / target_params - 1:+.1%} vs the transformer"
                 if name != "transformer" else ""))
        result = train_arm(name, model, tasks, config, run_dir)
        per_seed = evaluate_arm(name, model, result, tasks, config)
        for entry in per_seed:
            run_dir.log({"run": name, "split": "test", "seed": entry["seed"],
                         "learning_rate": entry["learning_rate"],
                         "exact_match": entry["test_exact_match"],
                         "token_accuracy": entry["test_token_accuracy"]})
        numbers["arms"][name] = {
            "num_params": count, "hidden_dim": hidden, "train_seconds": result.seconds,
            "vmapped": result.vmapped, "tokens_per_second": _throughput(result),
            "per_seed": per_seed,
        }
    if config.task == "toy":
        numbers["baselines"] = [baseline_aers(t, config) for t in tasks.values()]
    return numbers


# --------------------------------------------------------------------------- verdict


def _per_seed(numbers: dict, arm: str, key: str) -> list[float]:
    return [e[key] for e in numbers["arms"][arm]["per_seed"]]


def _head_aers(numbers: dict, arm: str) -> list[float]:
    return [e["alignment"]["chosen_test_aer"] for e in numbers["arms"][arm]["per_seed"]]


def metrics_of(numbers: dict) -> dict:
    """``stats.summary`` records of every per-seed number the verdict and the REPORT read."""
    out = {}
    for arm in numbers["arms"]:
        out[f"{arm}_exact_match"] = stats.summary(_per_seed(numbers, arm, "test_exact_match"))
        out[f"{arm}_token_accuracy"] = stats.summary(
            _per_seed(numbers, arm, "test_token_accuracy"))
        if "alignment" in numbers["arms"][arm]["per_seed"][0]:
            out[f"{arm}_head_aer"] = stats.summary(_head_aers(numbers, arm))
    if numbers.get("baselines"):
        for key in ("diagonal_aer", "ibm1_aer"):
            out[key] = stats.summary([b[key] for b in numbers["baselines"]])
    return out


def seed_passes(numbers: dict, config) -> dict[str, list[bool]]:
    """The per-seed tests of the rule: accuracy, and (toy) the two AER margins."""
    r = config.rule
    tests = {"accurate": [x >= r.min_exact_match
                          for x in _per_seed(numbers, "transformer", "test_exact_match")]}
    if numbers["task"] == "toy":
        heads = _head_aers(numbers, "transformer")
        base = numbers["baselines"]
        tests["beats_diagonal"] = [h <= b["diagonal_aer"] - r.diagonal_margin
                                   for h, b in zip(heads, base, strict=True)]
        tests["beats_ibm1"] = [h <= b["ibm1_aer"] - r.ibm1_margin
                               for h, b in zip(heads, base, strict=True)]
    return tests


def verdict(numbers: dict, config) -> dict:
    """``{"verdict", "measured"}``: a pure function of the numbers and the rule."""
    m = metrics_of(numbers)
    tests = seed_passes(numbers, config)
    passes = [all(t) for t in zip(*tests.values(), strict=True)]
    cls, k_of_n = experiment.seed_verdict(passes, holds_at=config.verdict.holds_at,
                                          fails_at=config.verdict.fails_at)
    n = len(passes)
    fmt = stats.format_summary
    exact = f"transformer exact match {fmt(m['transformer_exact_match'], percent=True)}"
    parts = [f"{name} {fmt(m[f'{name}_exact_match'], percent=True)}"
             for name in numbers["arms"] if name != "transformer"]
    reasons = [f"accuracy >= {config.rule.min_exact_match:.0%} in {sum(tests['accurate'])} of {n}"]
    if numbers["task"] == "toy":
        reasons += [
            f"head AER >= {config.rule.diagonal_margin:.2f} below the diagonal in "
            f"{sum(tests['beats_diagonal'])} of {n}",
            f"head AER >= {config.rule.ibm1_margin:.2f} below IBM-1 in "
            f"{sum(tests['beats_ibm1'])} of {n}",
        ]
        aer = (f"dev-chosen head test AER {fmt(m['transformer_head_aer'])} vs diagonal "
               f"{fmt(m['diagonal_aer'])} and IBM-1 {fmt(m['ibm1_aer'])}")
        text = (f"{cls}: holds in {k_of_n}; {exact}, {aer} ({'; '.join(reasons)} seeds)")
        measured = (f"{exact}; {aer} (95% intervals over {n} seeds); RNN baselines "
                    f"(parameter-matched, same lr grid): {', '.join(parts) or 'none'}.")
    else:
        text = (f"{cls}: holds in {k_of_n}; {exact} ({reasons[0]} seeds); SCAN "
                f"{numbers['scan_split']}: translation accuracy only, no gold alignment")
        measured = (f"SCAN {numbers['scan_split']}: {exact} (95% interval over {n} seeds); "
                    f"RNN baselines: {', '.join(parts) or 'none'}.")
    return {"verdict": text, "measured": measured}


# --------------------------------------------------------------------------- plots


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> list[str]:
    """Heatmaps of each attention arm's dev-chosen head (first seed) on test sentences,
    gold links boxed."""
    figures = []
    for name, arm in numbers["arms"].items():
        alignment = arm["per_seed"][0].get("alignment")
        if not alignment or not alignment["heatmaps"]:
            continue
        maps, golds = [], []
        for h in alignment["heatmaps"]:
            gold = np.zeros((len(h["target"]), len(h["source"])), bool)
            for s, t in h["gold"]:
                gold[t, s] = True
            maps.append((np.asarray(h["weights"]), h["target"], h["source"]))
            golds.append(gold)
        layer, head = alignment["chosen"]["layer"], alignment["chosen"]["head"]
        path = run_dir.figure_path(f"cross_attention_{name}")
        viz.save_attention_grid(
            path, maps, titles=[f"{name} layer {layer} head {head}"] * len(maps), golds=golds,
            suptitle=f"{name} seed {arm['per_seed'][0]['seed']}: head chosen on dev "
            f"(test AER {alignment['chosen_test_aer']:.3f}); red boxes = gold alignment")
        figures.append(path.name)
    return figures


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    metrics = metrics_of(numbers)
    toy = config.task == "toy"
    return {
        "claim": CLAIM,
        "rule": rule_text(config),
        **verdict(numbers, config),
        "seeds": numbers["seeds"],
        "metrics": metrics,
        "headline": ["transformer_exact_match", "transformer_head_aer"] if toy
        else ["transformer_exact_match"],
        "published": published(config, metrics),
        "published_note": PUBLISHED_NOTE if not toy else
        "no published figure for this generated task",
        "figures": plot(numbers, config, run_dir),
        "numbers": numbers,
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
