"""Coreference: where does "it" look in "The trophy didn't fit in the suitcase because it
was too big", and does the model need that look?

Trains a small transformer encoder, one per seed (vmapped), to name the antecedent of the
pronoun on Winograd-style sentences (``attnjax.data.coreference``; each seed draws its own
sentences). The readout (``config.readout``) decides what the test can show:

* ``"identity"`` (default): the pronoun's state scores the two candidate *words* (logits
  over the vocabulary read at the candidates' token ids). The same two words appear in
  either order and as either answer, so the pronoun's state must carry *which word* the
  antecedent is: information that sits only at the antecedent's position.
* ``"position"``: first or second candidate. The label is a function of the relation and
  the property words alone ("fit ... big" -> first), so a model can be right without any
  information from the antecedent: attention to it is then not needed, only possible.

Selection on the validation split (held-in pairs): the head whose attention from the
pronoun most often puts more weight on the gold candidate than on the other one. On test
(held-out noun pairs and templates, at every filler distance) we report that head's probe
accuracy and the causal test: the model's accuracy with the chosen head ablated (zero or
mean output, ``analysis.ablate_heads``) against the same with a random other head of the
same layer (the control), and every other head of that layer for reference. Baselines:
nearest candidate, first candidate, random. The seed sentences' attention from the pronoun
(seed 0's model) is shown as terminal bars and a heatmap.

    python -m experiments.coreference [--config configs/coreference.py[:tour|smoke]]
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from attnjax import analysis, experiment, nn, stats, train, viz
from attnjax.data import coreference
from attnjax.train import SeedRngs
from experiments import REGISTRY

NAME = "coreference"
CLAIM = REGISTRY[NAME].claim
RULE = (
    "per seed, on held-out noun pairs and templates: the transformer's antecedent accuracy "
    "({readout} readout) is >= {min_accuracy:.0%} at every filler distance, AND the head "
    "chosen on validation (the most frequent preference of the pronoun's attention for the "
    "gold candidate) has test probe accuracy >= {min_probe_accuracy:.0%}, AND {ablation}-"
    "ablating that head lowers test accuracy by >= {min_excess_drop:.0%} more than "
    "{ablation}-ablating a random other head of the same layer; the claim holds if all three "
    "pass in >= {holds_at:.0%} of seeds, does not hold if in <= {fails_at:.0%}, else mixed"
)


def rule(config: ml_collections.ConfigDict) -> str:
    return RULE.format(readout=config.readout, ablation=config.ablation, **config.bars,
                       **config.verdict)


def _inputs(arrays: dict) -> dict:
    keys = ("tokens", "pronoun", "choices")
    return {k: arrays[k] for k in keys if k in arrays}


@functools.cache
def _ablated_logits(model, path: str, head: int, mode: str):
    """A jitted ``(params, means, batch) -> logits`` with one head ablated (cached: one
    compilation per head, shared by the seeds)."""

    @jax.jit
    def logits(params, means, batch):
        return analysis.ablate_heads(
            model, {"params": params}, *train.classify.model_inputs(batch, "pronoun"),
            heads={path: [head]}, mode=mode, means=means)

    return logits


def accuracy(model, params, arrays: dict, ablate: tuple[str, int] | None = None,
             mode: str = "zero", means=None) -> float:
    """Antecedent accuracy on ``arrays``, optionally with head ``ablate = (path, h)``
    removed."""
    if ablate is None:
        logits = train.predict(model, params, arrays, "pronoun")
    else:
        fn = _ablated_logits(model, ablate[0], int(ablate[1]), mode)
        logits = train.map_in_batches(lambda b: fn(params, means, b), _inputs(arrays))
    return float(np.mean(logits.argmax(-1) == arrays["label"]))


def concatenate(arrays_by_distance: dict) -> dict:
    first = next(iter(arrays_by_distance.values()))
    return {k: np.concatenate([a[k] for a in arrays_by_distance.values()]) for k in first}


def measure_seed(model, params, data: dict, config, seed: int) -> dict:
    """Accuracy per distance, the probe, the head chosen on validation and the ablations of
    one seed's trained model."""
    test_all = concatenate(data["test"])
    by_distance = {d: accuracy(model, params, a) for d, a in data["test"].items()}
    validation_probe = analysis.pronoun_probe(
        analysis.pronoun_attention(model, params, data["validation"]), data["validation"])
    layer, head = (int(i) for i in np.unravel_index(np.argmax(validation_probe),
                                                    validation_probe.shape))
    test_probe = analysis.pronoun_probe(analysis.pronoun_attention(model, params, test_all),
                                        test_all)
    _, maps = analysis.capture_attention(model, {"params": params},
                                         *train.classify.model_inputs(
                                             {k: v[:1] for k, v in test_all.items()}, "pronoun"))
    path = analysis.layer_paths(maps, "self_attention")[layer]
    means = None
    if config.ablation == "mean":
        v = data["validation"]
        means = analysis.mean_head_outputs(
            model, {"params": params}, *train.classify.model_inputs(v, "pronoun"),
            valid=v["tokens"] != coreference.PAD_ID)
    num_heads = validation_probe.shape[1]
    others = [h for h in range(num_heads) if h != head]
    control = int(SeedRngs(seed).numpy("control_head").choice(others))
    full = accuracy(model, params, test_all)
    ablated = {h: accuracy(model, params, test_all, (path, h), config.ablation, means)
               for h in range(num_heads)}
    label = test_all["label"]
    return {
        "seed": seed,
        "accuracy_by_filler_tokens": by_distance,
        "worst_accuracy": min(by_distance.values()),
        "test_accuracy": full,
        "held_out_template_accuracy": held_out_template_accuracy(model, params, data),
        "validation_probe_per_layer_head": validation_probe.tolist(),
        "test_probe_per_layer_head": test_probe.tolist(),
        "chosen_head": {"layer": layer, "head": head, "path": path,
                        "test_probe": float(test_probe[layer, head]),
                        "validation_probe": float(validation_probe[layer, head])},
        "best_test_probe": float(test_probe.max()),
        "ablation": {
            "mode": config.ablation,
            "accuracy_by_head": {str(h): a for h, a in ablated.items()},
            "control_head": control,
            "drop_chosen": full - ablated[head],
            "drop_control": full - ablated[control],
            "drop_other_heads_mean": float(np.mean([full - ablated[h] for h in others])),
        },
        "baselines": {"nearest_candidate": float(np.mean(label == 1)),
                      "first_candidate": float(np.mean(label == 0)), "random": 0.5},
    }


def held_out_template_accuracy(model, params, data: dict) -> float | None:
    correct, total = 0, 0
    for d, arrays in data["test"].items():
        mask = np.array([coreference.uses_held_out_template(e) for e in data["test_examples"][d]])
        if mask.any():
            predictions = train.predict(model, params, arrays, "pronoun").argmax(-1)
            correct += int((predictions == arrays["label"])[mask].sum())
            total += int(mask.sum())
    return correct / total if total else None


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    seeds = [int(s) for s in config.seeds]
    data = {s: coreference.make_datasets(config, seed=SeedRngs(s).int("data_draw"))
            for s in seeds}
    first = data[seeds[0]]
    model = nn.encoder_classifier(config, len(first["vocab"]), first["length"])
    batch_size = min(int(config.train.batch_size), len(first["train"]["label"]))
    batch_fns = {s: train.make_batch_fn(data[s]["train"], batch_size,
                                        SeedRngs(s).int("data_order")) for s in seeds}
    example = train.classify.model_inputs({k: v[:2] for k, v in first["train"].items()},
                                          "pronoun")
    result = train.train(
        name="transformer", seeds=seeds, config=config.train,
        init=lambda key: model.init(key, *example)["params"],
        loss_fn=train.classification_loss_fn(model, "pronoun"),
        batches=lambda rngs, step: batch_fns[rngs.seed](step),
        run_dir=run_dir, parallel=config.parallel, vmap_seeds=config.vmap_seeds,
    )
    print(f"transformer: {result.num_params:,} parameters, {len(seeds)} seeds "
          f"({'vmapped' if result.vmapped else 'one after another'}), {result.seconds:.0f} s")
    per_seed = [measure_seed(model, p, data[s], config, s)
                for s, p in zip(result.seeds, result.params, strict=True)]
    for r in per_seed:
        run_dir.log({"split": "test", "seed": r["seed"], **{
            f"accuracy_filler_{d}": a for d, a in r["accuracy_by_filler_tokens"].items()}})
    views = seed_views(model, result.params[0], first, per_seed[0]["chosen_head"], run_dir)
    return {
        "seeds": seeds,
        "num_params": result.num_params,
        "train_seconds": result.seconds,
        "vmapped": result.vmapped,
        "num_train_per_seed": len(first["train"]["label"]),
        "num_test_per_distance": int(config.task.num_test),
        "final_train": result.final,
        "per_seed": per_seed,
        "seed_sentences": views["sentences"],
        "figures": [views["figure"]],
    }


def seed_views(model, params, data, chosen: dict, run_dir) -> dict:
    """Prediction, bars and heatmap of the chosen head for each seed sentence."""
    layer, head = chosen["layer"], chosen["head"]
    arrays = data["seed_arrays"]
    probabilities = np.asarray(jax.nn.softmax(train.predict(model, params, arrays, "pronoun"),
                                              -1))
    _, maps = jax.jit(lambda *inputs: analysis.capture_attention(
        model, {"params": params}, *inputs))(*train.classify.model_inputs(arrays, "pronoun"))
    best = np.asarray(maps[chosen["path"]])[:, head]
    sentences, grid = [], []
    for i, example in enumerate(data["seeds"]):
        n = len(example.tokens)
        row = best[i, example.pronoun, :n]
        tokens = list(example.tokens)
        bars = viz.attention_bars(
            tokens, row, query=f"{tokens[example.pronoun]} -> (layer {layer}, head {head})",
            highlight=example.candidates,
        )
        print(bars)
        sentences.append({
            "text": example.text,
            "gold_antecedent": tokens[example.antecedent],
            "predicted_antecedent": tokens[example.candidates[int(probabilities[i].argmax())]],
            "p_gold": float(probabilities[i, example.label]),
            "attention_from_pronoun": {tokens[c]: float(row[c]) for c in example.candidates},
            "top_attended": tokens[int(row.argmax())],
            "bars": bars,
        })
        grid.append((best[i, :n, :n], tokens, tokens))
    figure = run_dir.figure_path("seed_sentences")
    viz.save_attention_grid(
        figure, grid, titles=[f"layer {layer} head {head}"] * len(grid),
        suptitle="Chosen antecedent head (seed 0) on the seed sentences (rows: queries)",
    )
    return {"sentences": sentences, "figure": figure.name}


def metrics(numbers: dict) -> dict:
    """The headline metrics over seeds (``stats.summary``)."""
    per_seed = numbers["per_seed"]
    pick = {
        "worst_test_accuracy": lambda r: r["worst_accuracy"],
        "test_accuracy": lambda r: r["test_accuracy"],
        "chosen_head_test_probe": lambda r: r["chosen_head"]["test_probe"],
        "ablation_drop_chosen": lambda r: r["ablation"]["drop_chosen"],
        "ablation_drop_control": lambda r: r["ablation"]["drop_control"],
        "ablation_excess_drop": lambda r: r["ablation"]["drop_chosen"]
        - r["ablation"]["drop_control"],
    }
    return {name: stats.summary([f(r) for r in per_seed]) for name, f in pick.items()}


def verdict(numbers: dict, config: ml_collections.ConfigDict) -> dict:
    bars = config.bars
    m = metrics(numbers)
    legs = {
        "accurate": [a >= bars.min_accuracy for a in m["worst_test_accuracy"]["per_seed"]],
        "head attends to the antecedent": [
            p >= bars.min_probe_accuracy for p in m["chosen_head_test_probe"]["per_seed"]],
        "ablating it hurts more than the control": [
            e >= bars.min_excess_drop for e in m["ablation_excess_drop"]["per_seed"]],
    }
    passes = [all(seed) for seed in zip(*legs.values(), strict=True)]
    cls, k_of_n = experiment.seed_verdict(passes, holds_at=config.verdict.holds_at,
                                          fails_at=config.verdict.fails_at)
    n = len(passes)
    fmt = lambda name: stats.format_summary(m[name], percent=True)
    reasons = ", ".join(f"{leg} in {sum(p)} of {n}" for leg, p in legs.items())
    chosen = [f"L{r['chosen_head']['layer']}H{r['chosen_head']['head']}"
              for r in numbers["per_seed"]]
    text = (f"{cls}: holds in {k_of_n} ({reasons}); worst-distance accuracy "
            f"{fmt('worst_test_accuracy')}, chosen head's test probe "
            f"{fmt('chosen_head_test_probe')}, ablation drop chosen "
            f"{fmt('ablation_drop_chosen')} vs control {fmt('ablation_drop_control')} "
            "(mean [95% interval over seeds])")
    baseline = max(numbers["per_seed"][0]["baselines"].values())
    measured = (
        f"over {n} seeds, held-out antecedent accuracy {fmt('test_accuracy')} (worst distance "
        f"{fmt('worst_test_accuracy')}) vs best position baseline {baseline:.1%}; the head "
        f"chosen on validation ({', '.join(chosen)}) prefers the gold candidate in "
        f"{fmt('chosen_head_test_probe')} of test sentences; {config.ablation}-ablating it "
        f"costs {fmt('ablation_drop_chosen')} accuracy, a random same-layer head "
        f"{fmt('ablation_drop_control')}"
    )
    return {"verdict": text, "measured": measured}


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    return {
        "claim": CLAIM,
        "rule": rule(config),
        **verdict(numbers, config),
        "metrics": metrics(numbers),
        "headline": ["worst_test_accuracy", "chosen_head_test_probe", "ablation_excess_drop"],
        "published": [],
        "published_note": "no published figure for this synthetic task",
        **numbers,
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
