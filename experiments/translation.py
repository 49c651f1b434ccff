"""Translation with cross-attention: does each output word look back at the input words it
corresponds to?

Trains encoder-decoder models (a transformer; GRU/LSTM seq2seq with and without additive
attention) on the toy English -> French-like task, whose gold word alignment is known, or on
SCAN (Lake & Baroni 2018). Reports exact-match and token accuracy on held-out data, training
time and throughput, and scores every cross-attention head as a word aligner (alignment
error rate against the gold links, next to a monotonic-diagonal baseline), with heatmaps.

    python -m experiments.translation --config configs/translation.py:toy
    python -m experiments.translation --config configs/translation.py:scan_simple
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from attnjax import analysis, experiment, nn, parallel, train, viz
from attnjax.data import translation
from experiments import REGISTRY

NAME = "translation"
CLAIM = REGISTRY[NAME].claim
# Lake & Baroni (2018), best overall RNN per split (exact match on the test set).
PUBLISHED_RNN = {"simple": 0.997, "length": 0.138, "addprim_jump": 0.012}


def train_one(name, model, data, config, run_dir):
    """Train ``model`` (resuming from its checkpoints in the run folder); returns params,
    wall time and the last training record."""
    tc = config.train
    arrays = data["train"]
    n = len(arrays["source"])
    batch_size = min(tc.batch_size, n)
    params = model.init(jax.random.key(config.seed), arrays["source"][:2], arrays["target_in"][:2])[
        "params"
    ]
    optimizer = train.make_optimizer(
        tc.learning_rate,
        warmup_steps=tc.warmup_steps,
        total_steps=tc.num_steps,
        schedule=tc.schedule,
        weight_decay=tc.weight_decay,
        clip_norm=tc.clip_norm,
    )
    state, step = parallel.train_step_for(
        config.parallel, train.seq2seq_loss_fn(model, label_smoothing=tc.label_smoothing),
        optimizer, train.TrainState.create(params, optimizer),
    )

    batch_at = train.make_batch_fn(
        arrays, batch_size, config.seed,
        bucket_by="target_out" if tc.bucket_multiple else None,
        pad_to_multiple=tc.bucket_multiple or 1,
    )

    checkpointer = train.Checkpointer(
        run_dir.path / "checkpoints" / name, every=tc.checkpoint_every
    )
    tic = time.perf_counter()
    state, records = train.fit(
        state,
        step,
        batch_at,
        num_steps=tc.num_steps,
        base_key=jax.random.fold_in(jax.random.key(config.seed), 1),
        log=lambda r: run_dir.log({"model": name, **r}),
        log_every=tc.log_every,
        checkpointer=checkpointer,
        tokens_in=lambda b: int((b["target_out"] != 0).sum()),
        description=name,
    )
    seconds = time.perf_counter() - tic
    trained = [r for r in records if r.get("split") == "train"]
    throughput = [r["tokens_per_second"] for r in trained[1:]] or [
        r["tokens_per_second"] for r in trained
    ]  # the first interval includes compilation
    return state.params, {
        "train_seconds": seconds,
        "tokens_per_second": float(np.median(throughput)) if throughput else None,
        "final_train_loss": trained[-1]["loss"] if trained else None,
    }


def score_alignment(model, params, data, config, run_dir, name):
    """AER of every cross-attention head, the best head, and the diagonal baseline."""
    test, pairs, golds = data["test"], data["test_pairs"], data["golds"]
    weights = analysis.cross_attention_maps(model, params, test, config.eval.batch_size)
    source_lengths = [len(s) for s, _ in pairs]
    target_lengths = [len(t) for _, t in pairs]
    aers = analysis.head_aers(weights, golds, source_lengths, target_lengths)
    layer, head = np.unravel_index(np.argmin(aers), aers.shape)
    diagonal = analysis.corpus_aer(
        [
            analysis.diagonal_links(s, t)
            for s, t in zip(source_lengths, target_lengths, strict=True)
        ],
        golds,
    )
    # Heatmaps of the best head on the first few test sentences, gold links boxed.
    maps, golds_m, titles = [], [], []
    for i in range(min(config.eval.num_heatmaps, len(pairs))):
        source, target = pairs[i]
        gold = np.zeros((len(target), len(source)), bool)
        for s, t in golds[i]:
            gold[t, s] = True
        maps.append((weights[layer, i, head, : len(target), : len(source)], target, source))
        golds_m.append(gold)
        titles.append(f"{name} layer {layer} head {head}")
    figure = run_dir.figure_path(f"cross_attention_{name}")
    viz.save_attention_grid(
        figure,
        maps,
        titles=titles,
        golds=golds_m,
        suptitle=f"{name}: best cross-attention head (AER {aers[layer, head]:.3f}); "
        "red boxes = gold alignment",
    )
    return {
        "aer_per_layer_head": aers.tolist(),
        "best_head": {"layer": int(layer), "head": int(head), "aer": float(aers[layer, head])},
        "mean_head_aer": float(aers.mean()),
        "diagonal_aer": diagonal,
        "figure": figure.name,
    }


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    data = translation.load_task(config)
    print(
        f"{config.task}: {data['num_train']} train / {data['num_test']} test pairs; "
        f"vocab {len(data['source_vocab'])} -> {len(data['target_vocab'])}"
    )
    results = {
        "task": config.task,
        "num_train": data["num_train"],
        "num_test": data["num_test"],
        "models": {},
        "figures": [],
    }
    for name in config.models:
        model = nn.seq2seq_model(name, config, len(data["source_vocab"]), len(data["target_vocab"]))
        params, training = train_one(name, model, data, config, run_dir)
        tic = time.perf_counter()
        metrics, _ = train.evaluate_seq2seq(
            model,
            params,
            data["test"],
            batch_size=config.eval.batch_size,
            beam_size=config.eval.beam_size,
        )
        entry = {
            **training,
            **{f"test_{k}": v for k, v in metrics.items()},
            "eval_seconds": time.perf_counter() - tic,
        }
        has_attention = name == "transformer" or name.endswith("_attention")
        if data["golds"] is not None and has_attention:
            entry["alignment"] = score_alignment(model, params, data, config, run_dir, name)
            results["figures"].append(entry["alignment"]["figure"])
        run_dir.log({"model": name, "split": "test", **metrics})
        results["models"][name] = entry
    results.update(verdict_of(results, config))
    return results


def verdict_of(results: dict, config: ml_collections.ConfigDict) -> dict:
    """The measured sentence and verdict, from the numbers only."""
    models = results["models"]
    parts = [f"{name}: exact match {m['test_exact_match']:.1%}" for name, m in models.items()]
    if config.task == "scan":
        published = PUBLISHED_RNN.get(config.scan_split)
        if published is not None:
            parts.append(f"Lake & Baroni 2018 best RNN: {published:.1%}")
    aligned = {n: m["alignment"] for n, m in models.items() if "alignment" in m}
    for name, a in aligned.items():
        parts.append(
            f"{name} best-head AER {a['best_head']['aer']:.3f} vs diagonal {a['diagonal_aer']:.3f}"
        )
    measured = "; ".join(parts)
    if not aligned:
        ok = [m["test_exact_match"] >= config.eval.min_exact_match for m in models.values()]
        verdict = "claim holds" if all(ok) else "mixed" if any(ok) else "claim does not hold"
        return {
            "claim": CLAIM,
            "measured": measured,
            "verdict": f"{verdict}: translation accuracy only (no gold alignment on "
            f"{config.task}); bar {config.eval.min_exact_match:.0%}",
        }
    transformer = aligned.get("transformer") or next(iter(aligned.values()))
    beats_diagonal = transformer["best_head"]["aer"] < transformer["diagonal_aer"]
    accurate = max(m["test_exact_match"] for m in models.values()) >= config.eval.min_exact_match
    if beats_diagonal and accurate:
        verdict = "claim holds: a cross-attention head aligns better than the diagonal"
    elif beats_diagonal or accurate:
        verdict = (
            "mixed: "
            + (
                "alignment beats the diagonal"
                if beats_diagonal
                else "alignment does not beat the diagonal"
            )
            + (" but accuracy is below the bar" if not accurate else "")
        )
    else:
        verdict = "claim does not hold: neither accurate nor better aligned than the diagonal"
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


if __name__ == "__main__":
    experiment.main(NAME, run)
