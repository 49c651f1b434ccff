"""Do heads specialise? And is the specialisation as clean as the diagrams suggest?

On the Winograd-style coreference task of ``experiments/coreference.py`` (fillers of 0 to
``max_filler`` tokens, held-out noun pairs and templates at test time):

* **1 head vs h heads at equal parameter count** (Vaswani et al. 2017, Table 3 rows A): the
  same encoder (``model_dim`` fixed, so the attention has the same parameters) trained with
  each number of heads in ``head_counts``; held-out accuracy of each.
* **what each head does** (the model with ``num_heads``): ``analysis.head_scores`` on
  validation sentences (previous/next-token and self scores, attention to the first token and
  to punctuation, entropy) and the antecedent probe (does the pronoun's row put more weight
  on the gold candidate?); each head gets the first matching class: *coreference* (probe >=
  ``coreference_probe``), *positional* (some relative-offset score >= ``positional``),
  *delimiter* (first token + punctuation >= ``delimiter``), *diffuse* (normalised entropy >=
  ``diffuse``), else *unclassified*;
* **ablation** (Michel et al. 2019): held-out accuracy with each head zero-ablated
  (``analysis.ablate_heads``), and with all heads of a layer but the most important one.

And on the toy translation transformer of ``experiments/translation.py`` (its
``translation_variant`` config, transformer only): every cross-attention head's alignment
error rate against the gold word alignments (an *alignment* head has AER <=
``classes.alignment_aer``, below the monotonic-diagonal baseline), the decoder self-attention
heads' scores, and the drop in teacher-forced token accuracy when each cross-attention head
is ablated.

    python -m experiments.heads [--config configs/heads.py[:smoke]]
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, train
from experiments import REGISTRY
from experiments import translation as translation_experiment

NAME = "heads"
CLAIM = REGISTRY[NAME].claim
CLASSES = ("coreference", "positional", "delimiter", "diffuse", "unclassified")


def accuracy_of(model, params, arrays, heads=None) -> float:
    """Held-out accuracy, optionally with ``heads`` ({path: [h]}) zero-ablated."""
    @jax.jit
    def logits(batch):
        return analysis.ablate_heads(model, {"params": params}, batch["tokens"],
                                     batch["pronoun"], heads=heads or {})

    out = train.map_in_batches(logits, {"tokens": arrays["tokens"],
                                        "pronoun": arrays["pronoun"]}, 512)
    return float(np.mean(out.argmax(-1) == arrays["label"]))


def train_model(config, data, num_heads: int, run_dir):
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.transformer.num_heads = num_heads
    model = nn.encoder_classifier(cfg, len(data["vocab"]),
                                                          data["length"])
    tc = config.train
    params, info = train.fit_classifier(
        model, data["train"], position_key="pronoun", num_steps=tc.num_steps,
        batch_size=tc.batch_size, learning_rate=tc.learning_rate, seed=config.seed,
        warmup_steps=tc.warmup_steps, log=lambda r: run_dir.log({"heads": num_heads, **r}),
        log_every=tc.log_every, checkpoint_dir=run_dir.path / "checkpoints" / f"h{num_heads}",
        checkpoint_every=tc.checkpoint_every, description=f"{num_heads} heads")
    return model, params, info


def classify(scores: dict, probe: np.ndarray, config) -> list[list[str]]:
    """``[L][H]`` class of every head (first matching rule, see the module doc)."""
    th = config.classes
    offsets = np.max([scores[k] for k in scores if k.startswith("offset_") and k != "offset_0"],
                     axis=0)
    delimiter = scores["first_token"] + scores["punctuation"]
    out = []
    for layer in range(probe.shape[0]):
        row = []
        for head in range(probe.shape[1]):
            if probe[layer, head] >= th.coreference_probe:
                row.append("coreference")
            elif offsets[layer, head] >= th.positional:
                row.append("positional")
            elif delimiter[layer, head] >= th.delimiter:
                row.append("delimiter")
            elif scores["normalized_entropy"][layer, head] >= th.diffuse:
                row.append("diffuse")
            else:
                row.append("unclassified")
        out.append(row)
    return out


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    data = coreference.make_datasets(config)
    test = {k: np.concatenate([a[k] for a in data["test"].values()])
            for k in ("tokens", "pronoun", "candidates", "label")}
    by_heads = {}
    main = None
    for h in config.head_counts:
        model, params, info = train_model(config, data, h, run_dir)
        n_params = info.get("num_params")
        by_heads[h] = {"test_accuracy": accuracy_of(model, params, test), "num_params": n_params,
                       "final_train_accuracy": info.get("final_train_accuracy")}
        run_dir.log({"split": "test", "heads": h, **by_heads[h]})
        if h == config.num_heads:
            main = (model, params)
    model, params = main

    # What each head does, on validation sentences.
    val = data["validation"]
    _, maps = analysis.capture_attention(model, {"params": params}, val["tokens"][:512],
                                         val["pronoun"][:512])
    weights = analysis.stack_layers(maps, "self_attention")  # [L, N, H, T, T]
    valid = val["tokens"][:512] != 0
    words = [data["vocab"].decode(row, strip_special=False) for row in val["tokens"][:512]]
    scores = analysis.head_scores(weights, valid=valid, tokens=words, offsets=(-2, -1, 0, 1, 2))
    probe = analysis.pronoun_probe(
        analysis.pronoun_attention(model, params, data["validation"]),
        data["validation"])
    classes = classify(scores, probe, config)

    # Ablation, one head at a time, on the held-out test sets.
    base = by_heads[config.num_heads]["test_accuracy"]  # the intact model, measured above
    paths = analysis.layer_paths(maps, "self_attention")
    drop = np.zeros(probe.shape)
    for layer, path in enumerate(paths):
        for head in range(probe.shape[1]):
            drop[layer, head] = base - accuracy_of(model, params, test, {path: [head]})
    only_best = {}
    for layer, path in enumerate(paths):
        keep = int(np.argmax(drop[layer]))
        others = [h for h in range(probe.shape[1]) if h != keep]
        only_best[path] = {"kept_head": keep,
                           "accuracy": accuracy_of(model, params, test, {path: others})}
    results = {
        "translation": translation_heads(config, run_dir),
        "by_num_heads": {str(h): v for h, v in by_heads.items()},
        "num_heads": config.num_heads, "test_accuracy": base,
        "head_scores": {k: v.tolist() for k, v in scores.items()},
        "antecedent_probe": probe.tolist(), "classes": classes,
        "ablation_drop": drop.tolist(), "only_most_important_head_per_layer": only_best,
        "figures": [plot(scores, probe, drop, classes, by_heads, run_dir)],
    }
    results.update(verdict_of(results, config))
    return results


def translation_heads(config, run_dir: experiment.RunDir) -> dict:
    """Cross-attention heads of the toy translation transformer: AER, classes, ablation."""
    tcfg = experiment.load_config(f"configs/translation.py:{config.translation_variant}")
    tcfg.models = ("transformer",)
    data = translation.load_task(tcfg)
    model = nn.seq2seq_model("transformer", tcfg, len(data["source_vocab"]),
                                               len(data["target_vocab"]))
    params, _ = translation_experiment.train_one("transformer", model, data, tcfg, run_dir)
    alignment = translation_experiment.score_alignment(model, params, data, tcfg, run_dir,
                                                       "translation")
    test = data["test"]

    def token_accuracy(heads):
        @jax.jit  # one compilation per ablation: `heads` is static
        def correct(batch):
            logits = analysis.ablate_heads(model, {"params": params}, batch["source"],
                                           batch["target_in"], heads=heads)
            real = batch["target_out"] != 0
            return (logits.argmax(-1) == batch["target_out"]) & real, real

        hits, total = 0, 0
        for start in range(0, len(test["source"]), 512):
            batch = {k: test[k][start : start + 512] for k in ("source", "target_in",
                                                               "target_out")}
            ok, real = correct(batch)
            hits, total = hits + int(ok.sum()), total + int(real.sum())
        return hits / total

    aers = np.asarray(alignment["aer_per_layer_head"])
    base = token_accuracy({})
    drop = np.zeros(aers.shape)
    for layer in range(aers.shape[0]):
        for head in range(aers.shape[1]):
            path = f"decoder/layer_{layer}/cross_attention"
            drop[layer, head] = base - token_accuracy({path: [head]})
    _, maps = analysis.capture_attention(model, {"params": params}, test["source"][:256],
                                         test["target_in"][:256])
    self_weights = analysis.stack_layers(maps, "self_attention")
    decoder_self = analysis.head_scores(
        self_weights[[i for i, p in enumerate(analysis.layer_paths(maps, "self_attention"))
                      if p.startswith("decoder")]], valid=test["target_in"][:256] != 0)
    classes = [["alignment" if a <= config.classes.alignment_aer else "unaligned"
                for a in row] for row in aers]
    return {
        "cross_attention_aer": aers.tolist(), "diagonal_aer": alignment["diagonal_aer"],
        "cross_attention_classes": classes, "token_accuracy": base,
        "cross_attention_ablation_drop": drop.tolist(),
        "decoder_self_attention_previous_token": decoder_self["previous_token"].tolist(),
        "figure": alignment["figure"],
    }


def verdict_of(results: dict, config) -> dict:
    classes = [c for row in results["classes"] for c in row]
    counts = {c: classes.count(c) for c in CLASSES if classes.count(c)}
    drop = np.asarray(results["ablation_drop"])
    by = results["by_num_heads"]
    single = by.get("1", {}).get("test_accuracy")
    multi = by[str(config.num_heads)]["test_accuracy"]
    harmless = int(np.sum(drop < 0.01))
    layer, head = np.unravel_index(int(np.argmax(drop)), drop.shape)
    tr = results["translation"]
    aers = np.asarray(tr["cross_attention_aer"])
    tr_drop = np.asarray(tr["cross_attention_ablation_drop"])
    aligned = int(np.sum(aers <= config.classes.alignment_aer))
    aer_text = " ".join(f"{a:.2f}" for a in aers.ravel())
    measured = (
        f"coreference encoder ({config.transformer.num_layers} layers x {config.num_heads} "
        f"heads, d={config.transformer.model_dim}), held-out accuracy {multi:.1%}"
        + (f" vs {single:.1%} with 1 head at the same parameter count" if single is not None
           else "")
        + " (all: " + ", ".join(f"h={h} {v['test_accuracy']:.1%}" for h, v in by.items())
        + "); head classes: " + ", ".join(f"{c} {n}" for c, n in counts.items())
        + f"; ablating one head costs {drop.max():.1%} at most (layer {layer} head {head}, a "
        f"{results['classes'][layer][head]} head), < 1 point for {harmless}/{drop.size} heads"
        + f". Toy translation transformer: {aligned}/{aers.size} cross-attention heads align "
        f"(AER <= {config.classes.alignment_aer}; per head {aer_text}; diagonal "
        f"{tr['diagonal_aer']:.2f}); ablating one costs {tr_drop.max():.1%} token accuracy at "
        f"most (of {tr['token_accuracy']:.1%}); decoder previous-token scores up to "
        f"{np.max(tr['decoder_self_attention_previous_token']):.2f}"
    )
    if aligned:
        counts["alignment (translation)"] = aligned
    total = len(classes) + aers.size
    messy = counts.get("unclassified", 0) + counts.get("diffuse", 0) + (aers.size - aligned)
    specialised = total - messy  # heads in a role: coreference, positional, delimiter, alignment
    if specialised and messy == 0:
        verdict = ("claim holds: heads fall into distinct roles, and removing them one at a "
                   "time shows which roles the task needs")
    elif specialised:
        roles = ", ".join(c for c in counts if c not in ("unclassified", "diffuse"))
        verdict = (f"mixed: some heads specialise ({roles}), but {messy} of "
                   f"{total} fit no clean role, and {harmless} of "
                   f"{drop.size} coreference heads can be removed alone at no cost: messier "
                   "than the diagram")
    else:
        verdict = ("claim does not hold here: the heads do not separate into roles "
                   f"({', '.join(f'{c} {n}' for c, n in counts.items())})")
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


def plot(scores, probe, drop, classes, by_heads, run_dir) -> str:
    layers, heads = probe.shape
    figure = Figure(figsize=(14, 3.2 + 0.5 * layers))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    table = np.stack([scores["offset_-1"], scores["offset_1"], scores["first_token"],
                      scores["punctuation"], scores["normalized_entropy"], probe], axis=-1)
    names = ["prev", "next", "first", "punct", "entropy", "coref probe"]
    flat = table.reshape(layers * heads, -1)
    image = axes[0].imshow(flat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes[0].set(xticks=range(len(names)), xticklabels=names,
                yticks=range(layers * heads),
                yticklabels=[f"L{layer}H{head} {classes[layer][head]}"
                             for layer in range(layers) for head in range(heads)],
                title="what each head does")
    figure.colorbar(image, ax=axes[0], fraction=0.04)
    image = axes[1].imshow(drop * 100, cmap="Reds", aspect="auto")
    axes[1].set(xlabel="head", ylabel="layer", xticks=range(heads), yticks=range(layers),
                title="accuracy drop when ablated (points)")
    for (layer, head), v in np.ndenumerate(drop):
        axes[1].text(head, layer, f"{100 * v:.1f}", ha="center", va="center", fontsize=8)
    hs = list(by_heads)
    axes[2].bar([str(h) for h in hs], [100 * by_heads[h]["test_accuracy"] for h in hs])
    axes[2].set(xlabel="heads (same model_dim, same parameters)", ylabel="held-out accuracy %",
                ylim=(min(50, min(100 * by_heads[h]["test_accuracy"] for h in hs) - 5), 100.5),
                title="1 head vs h heads")
    figure.tight_layout()
    path = run_dir.figure_path("heads")
    figure.savefig(path, dpi=100)
    return path.name


if __name__ == "__main__":
    experiment.main(NAME, run)
