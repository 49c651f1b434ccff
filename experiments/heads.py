"""Do heads specialise? And is the specialisation as clean as the diagrams suggest?

Every seed draws its own data, initialisation and batch order (``SeedRngs``); the seeds
train together (vmapped).

* **Coreference encoder** (``attnjax.data.coreference``: Winograd-style sentences with
  fillers of 0 to ``max_filler`` tokens; held-out noun pairs and templates at test time).
  *1 head vs h heads at equal parameter count* (Vaswani et al. 2017, Table 3 rows A): the
  same encoder (``model_dim`` fixed, so the attention has the same parameters) trained with
  each number of heads in ``head_counts``, same train block; test accuracy per seed.
  *Roles* of the ``transformer.num_heads`` model's heads, measured on the **dev** split
  (validation sentences): ``analysis.head_scores`` (offset, first-token, punctuation,
  entropy scores) and the antecedent probe (does the pronoun's row put more weight on the
  gold candidate?). A head has the role *coreference* (probe >= ``coreference_probe``),
  *positional* (an offset -2..+2 score >= ``positional``), *delimiter* (first token +
  punctuation >= ``delimiter``); every matching role is kept.
* **Toy translation transformer** (``attnjax.data.translation``): a cross-attention head has
  the role *alignment* when its AER against the gold word alignments, on the dev half of
  the held-out sentences, is <= ``alignment_aer`` and at least ``alignment_margin`` below
  the monotonic diagonal's.
* A head's class: its role if it has exactly one; *multi-role* with two or more; else
  *diffuse* (normalised entropy >= ``diffuse``) or *unclassified*. "No clean role" = diffuse,
  unclassified or multi-role.
* **Ablation on test** (Michel et al. 2019): the test accuracy with each head zero-ablated
  (``analysis.ablate_heads``); and with all heads of a layer but the one whose ablation
  costs most on dev.

The verdict is the pre-registered ``RULE`` (per seed, then ``seed_verdict``).

    python -m experiments.heads [--config configs/heads.py[:tour|smoke]]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, nn, stats, train
from attnjax.data import coreference, translation
from attnjax.train.per_seed import pad_columns, per_seed_batches
from experiments import REGISTRY

NAME = "heads"
CLAIM = REGISTRY[NAME].claim
ROLES = ("coreference", "positional", "delimiter", "alignment")
CLASSES = (*ROLES, "multi-role", "diffuse", "unclassified")
RULE = (
    "per seed, over every head of the coreference encoder and every cross-attention head of "
    "the toy translation transformer, with roles measured on the dev split: the seed passes "
    "when at least {min_specialised} head(s) have a role (coreference probe >= "
    "{coreference_probe}, an offset score >= {positional}, first-token + punctuation >= "
    "{delimiter}, or cross-attention AER <= {alignment_aer} and >= {alignment_margin} below "
    "the diagonal's) AND at least {messy_fraction:.0%} of all heads have no clean role "
    "(diffuse, unclassified or more than one role); the claim holds if the seed test passes "
    "in >= {holds_at:.0%} of seeds and does not hold if it passes in <= {fails_at:.0%} "
    "(a seed with no specialised head, or with every head in exactly one role, fails)"
)


def rule_text(config) -> str:
    return RULE.format(**config.classes, **config.verdict)


# --------------------------------------------------------------------------- data


def coreference_data(config, seeds) -> dict[int, dict]:
    """Per seed: ``make_datasets`` with the seed's data draw; every array padded to one
    length (so the seeds share compiled programs)."""
    out = {}
    for seed in seeds:
        c = ml_collections.ConfigDict(config.to_dict())
        c.seed = train.SeedRngs(seed).int("data_draw")
        out[seed] = coreference.make_datasets(c)
    length = max(d["length"] for d in out.values())
    pad = lambda a: pad_columns(a, length, ["tokens"])  # noqa: E731
    for d in out.values():
        d["length"] = length
        d["train"], d["validation"] = pad(d["train"]), pad(d["validation"])
        d["test_all"] = pad({k: np.concatenate([a[k] for a in d["test"].values()])
                             for k in ("tokens", "pronoun", "candidates", "label")})
    return out


def translation_data(config, seeds) -> dict[int, dict]:
    """Per seed: the toy task with the seed's data draw (``load_task``), split train / dev
    (roles are chosen on it) / test (ablation and reported AERs)."""
    out = {}
    for seed in seeds:
        data = translation.load_task(config.translation, seed=seed)
        out[seed] = {"train": data["train"],
                     "dev": (data["dev"], data["dev_pairs"], data["dev_golds"]),
                     "test": (data["test"], data["test_pairs"], data["golds"]),
                     "source_vocab": len(data["source_vocab"]),
                     "target_vocab": len(data["target_vocab"])}
    keys = ("source", "target_in", "target_out")
    width = {k: max(d["train"][k].shape[1] for d in out.values()) for k in keys}
    for d in out.values():
        d["train"] = {k: pad_columns(d["train"], width[k], [k])[k] for k in keys}
        for split in ("dev", "test"):
            arrays, pairs, golds = d[split]
            d[split] = ({k: pad_columns(arrays, width[k], [k])[k] for k in keys}, pairs, golds)
    return out


# --------------------------------------------------------------------------- ablation


def _coreference_correct(model, params, batch, heads):
    logits = analysis.ablate_heads(model, {"params": params}, batch["tokens"],
                                   batch["pronoun"], heads=heads)
    correct = logits.argmax(-1) == batch["label"]
    return jnp.stack([correct, jnp.ones_like(correct)], -1).astype(jnp.int32)


def _translation_correct(model, params, batch, heads):
    logits = analysis.ablate_heads(model, {"params": params}, batch["source"],
                                   batch["target_in"], heads=heads)
    real = batch["target_out"] != 0
    hits = (logits.argmax(-1) == batch["target_out"]) & real
    return jnp.stack([hits.sum(-1), real.sum(-1)], -1)


@functools.cache
def _compiled(readout, model, heads: tuple):
    # One compilation per (model, ablated heads, shape); params are an argument, so every
    # seed reuses it.
    return jax.jit(lambda params, batch: readout(model, params, batch,
                                                 {p: list(h) for p, h in heads}))


def accuracy(readout, model, params, arrays, heads=(), batch_size: int = 256) -> float:
    """Accuracy (coreference) or teacher-forced token accuracy (translation) with
    ``heads`` (``((path, (h, ...)), ...)``) zero-ablated."""
    fn = _compiled(readout, model, tuple(heads))
    counts = train.map_in_batches(lambda b: fn(params, b), arrays, batch_size)
    return float(counts[:, 0].sum() / max(counts[:, 1].sum(), 1))


def ablation_drops(readout, model, params, arrays, paths, num_heads,
                   batch_size: int = 256) -> np.ndarray:
    """``[L, H]`` accuracy lost when each head alone is zero-ablated."""
    base = accuracy(readout, model, params, arrays, (), batch_size)
    return np.array([[base - accuracy(readout, model, params, arrays, ((p, (h,)),), batch_size)
                      for h in range(num_heads)] for p in paths])


# --------------------------------------------------------------------------- roles


def coreference_roles(scores: dict, probe: np.ndarray, th) -> list[list[list[str]]]:
    """``[L][H]`` list of the roles each encoder head meets (see the module doc)."""
    offsets = np.max([scores[k] for k in scores if k.startswith("offset_") and k != "offset_0"],
                     axis=0)
    delimiter = scores["first_token"] + scores["punctuation"]
    tests = {"coreference": probe >= th.coreference_probe,
             "positional": offsets >= th.positional, "delimiter": delimiter >= th.delimiter}
    return [[[r for r, ok in tests.items() if ok[layer, head]]
             for head in range(probe.shape[1])] for layer in range(probe.shape[0])]


def head_class(roles: list[str], entropy: float, th) -> str:
    if len(roles) == 1:
        return roles[0]
    if len(roles) > 1:
        return "multi-role"
    return "diffuse" if entropy >= th.diffuse else "unclassified"


def aer_of(weights, pairs, golds):
    """``([L, H] head AERs, diagonal AER)`` of cross-attention ``weights [L, N, H, T, S]``."""
    source_lengths = [len(s) for s, _ in pairs]
    target_lengths = [len(t) for _, t in pairs]
    aers = analysis.head_aers(weights, golds, source_lengths, target_lengths)
    diagonal = analysis.corpus_aer(
        [analysis.diagonal_links(s, t) for s, t in zip(source_lengths, target_lengths,
                                                        strict=True)], golds)
    return aers, diagonal


# --------------------------------------------------------------------------- measure


def measure_coreference(config, run_dir, datas: dict) -> dict:
    seeds = list(config.seeds)
    first = datas[seeds[0]]
    models, results = {}, {}
    for h in config.head_counts:
        cfg = ml_collections.ConfigDict(config.to_dict())
        cfg.transformer.num_heads = h
        model = nn.encoder_classifier(cfg, len(first["vocab"]), first["length"])
        keys = ("tokens", "pronoun", "label")
        result = train.train(
            name=f"coreference_h{h}", seeds=seeds, config=config.train,
            init=lambda key, model=model: model.init(
                key, first["train"]["tokens"][:2], first["train"]["pronoun"][:2])["params"],
            loss_fn=train.classification_loss_fn(model, "pronoun"),
            batches=per_seed_batches({s: {k: datas[s]["train"][k] for k in keys}
                                      for s in seeds}, int(config.train.batch_size)),
            run_dir=run_dir, vmap_seeds=config.vmap_seeds)
        print(f"coreference, {h} heads: {result.num_params} parameters, "
              f"{result.seconds:.0f} s ({'vmapped' if result.vmapped else 'looped'})")
        models[h], results[h] = model, result
    by_heads = {}
    for h, result in results.items():
        by_heads[str(h)] = {
            "num_params": result.num_params,
            "test_accuracy": [accuracy(_coreference_correct, models[h], p,
                                       _inputs(datas[s]["test_all"]))
                              for s, p in zip(seeds, result.params, strict=True)],
            "dev_accuracy": [accuracy(_coreference_correct, models[h], p,
                                      _inputs(datas[s]["validation"]))
                             for s, p in zip(seeds, result.params, strict=True)],
        }

    h = config.transformer.num_heads
    model, result = models[h], results[h]
    th = config.classes
    bs = _eval_batch(datas)
    per_seed = []
    for seed, params in zip(seeds, result.params, strict=True):
        d = datas[seed]
        dev = {k: v[: config.num_analysis] for k, v in d["validation"].items()}
        _, maps = analysis.capture_attention(model, {"params": params}, dev["tokens"],
                                             dev["pronoun"])
        weights = analysis.stack_layers(maps, "self_attention")  # [L, N, H, T, T]
        words = [d["vocab"].decode(row, strip_special=False) for row in dev["tokens"]]
        scores = analysis.head_scores(weights, valid=dev["tokens"] != 0, tokens=words,
                                      offsets=(-2, -1, 0, 1, 2))
        probe = analysis.pronoun_probe(analysis.pronoun_attention(model, params, dev), dev)
        roles = coreference_roles(scores, probe, th)
        paths = analysis.layer_paths(maps, "self_attention")
        test_drop = ablation_drops(_coreference_correct, model, params,
                                   _inputs(d["test_all"]), paths, h, bs)
        dev_drop = ablation_drops(_coreference_correct, model, params,
                                  _inputs(d["validation"]), paths, h, bs)
        only_best = {}
        for layer, path in enumerate(paths):
            keep = int(np.argmax(dev_drop[layer]))  # chosen on dev
            others = tuple(x for x in range(h) if x != keep)
            only_best[path] = {"kept_head": keep, "test_accuracy": accuracy(
                _coreference_correct, model, params, _inputs(d["test_all"]), ((path, others),),
                bs)}
        per_seed.append({
            "seed": seed,
            "head_scores": {k: v.tolist() for k, v in scores.items()},
            "antecedent_probe": probe.tolist(), "roles": roles,
            "classes": [[head_class(roles[layer][head],
                                    scores["normalized_entropy"][layer, head], th)
                         for head in range(h)] for layer in range(len(paths))],
            "test_ablation_drop": test_drop.tolist(), "dev_ablation_drop": dev_drop.tolist(),
            "only_most_important_head_per_layer": only_best,
        })
    return {"by_num_heads": by_heads, "per_seed": per_seed, "num_heads": h,
            "num_layers": config.transformer.num_layers}


def _eval_batch(datas) -> int:
    """One evaluation batch size for every split and seed (one compilation per ablation)."""
    sizes = [len(d[k]["tokens"]) for d in datas.values() for k in ("validation", "test_all")]
    return min(256, *sizes)


def _inputs(arrays):
    return {k: arrays[k] for k in ("tokens", "pronoun", "label")}


def measure_translation(config, run_dir, datas: dict) -> dict:
    seeds = list(config.seeds)
    t = config.translation
    model = nn.seq2seq_model("transformer", t, max(d["source_vocab"] for d in datas.values()),
                             max(d["target_vocab"] for d in datas.values()))
    first = datas[seeds[0]]["train"]
    result = train.train(
        name="translation", seeds=seeds, config=t.train,
        init=lambda key: model.init(key, first["source"][:2], first["target_in"][:2])["params"],
        loss_fn=train.seq2seq_loss_fn(model), run_dir=run_dir, vmap_seeds=config.vmap_seeds,
        batches=per_seed_batches({s: datas[s]["train"] for s in seeds}, int(t.train.batch_size)),
        tokens_in=lambda b: int((b["target_out"] != 0).sum()))
    print(f"translation transformer: {result.num_params} parameters, {result.seconds:.0f} s")
    th = config.classes
    per_seed = []
    for seed, params in zip(seeds, result.params, strict=True):
        (dev, dev_pairs, dev_golds), (test, test_pairs, test_golds) = (datas[seed]["dev"],
                                                                       datas[seed]["test"])
        bs = min(int(t.eval.batch_size), *(len(d[k][0]["source"]) for d in datas.values()
                                           for k in ("dev", "test")))
        dev_aer, dev_diagonal = aer_of(analysis.cross_attention_maps(model, params, dev, bs),
                                       dev_pairs, dev_golds)
        test_aer, test_diagonal = aer_of(analysis.cross_attention_maps(model, params, test, bs),
                                         test_pairs, test_golds)
        aligned = (dev_aer <= th.alignment_aer) & (dev_aer <= dev_diagonal - th.alignment_margin)
        _, maps = analysis.capture_attention(model, {"params": params}, test["source"][:2],
                                             test["target_in"][:2])
        paths = analysis.layer_paths(maps, "cross_attention")
        drop = ablation_drops(_translation_correct, model, params, test, paths,
                              t.transformer.num_heads, bs)
        layer, head = np.unravel_index(int(np.argmin(dev_aer)), dev_aer.shape)  # on dev
        per_seed.append({
            "seed": seed, "dev_aer": dev_aer.tolist(), "dev_diagonal_aer": dev_diagonal,
            "test_aer": test_aer.tolist(), "test_diagonal_aer": test_diagonal,
            "best_dev_head": [int(layer), int(head)],
            "best_dev_head_test_aer": float(test_aer[layer, head]),
            "roles": [[["alignment"] if a else [] for a in row] for row in aligned],
            "classes": [["alignment" if a else "unclassified" for a in row] for row in aligned],
            "token_accuracy": accuracy(_translation_correct, model, params, test, (), bs),
            "test_ablation_drop": drop.tolist(),
        })
    return {"per_seed": per_seed, "num_params": result.num_params}


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    seeds = list(config.seeds)
    numbers = {"seeds": seeds,
               "coreference": measure_coreference(config, run_dir,
                                                  coreference_data(config, seeds))}
    numbers["translation"] = (measure_translation(config, run_dir,
                                                  translation_data(config, seeds))
                              if config.translation.enabled else None)
    return numbers


# --------------------------------------------------------------------------- verdict


def seed_heads(numbers: dict, i: int) -> list[tuple[list[str], str]]:
    """``(roles, class)`` of every head of seed ``i`` (encoder, then cross-attention)."""
    parts = [numbers["coreference"]["per_seed"][i]]
    if numbers.get("translation"):
        parts.append(numbers["translation"]["per_seed"][i])
    return [(roles, cls) for part in parts
            for row_roles, row_classes in zip(part["roles"], part["classes"], strict=True)
            for roles, cls in zip(row_roles, row_classes, strict=True)]


def per_seed_metrics(numbers: dict, config) -> dict[str, list[float]]:
    seeds = numbers["seeds"]
    out = {"specialised_heads": [], "no_clean_role_fraction": [], "removable_fraction": [],
           "max_ablation_drop": []}
    for i in range(len(seeds)):
        heads = seed_heads(numbers, i)
        out["specialised_heads"].append(float(sum(len(r) >= 1 for r, _ in heads)))
        out["no_clean_role_fraction"].append(sum(len(r) != 1 for r, _ in heads) / len(heads))
        drop = np.asarray(numbers["coreference"]["per_seed"][i]["test_ablation_drop"])
        out["removable_fraction"].append(float(np.mean(drop < config.verdict.harmless_drop)))
        out["max_ablation_drop"].append(float(drop.max()))
    by = numbers["coreference"]["by_num_heads"]
    h = str(numbers["coreference"]["num_heads"])
    out[f"test_accuracy_h{h}"] = by[h]["test_accuracy"]
    if "1" in by and h != "1":
        out["test_accuracy_h1"] = by["1"]["test_accuracy"]
        out[f"accuracy_gain_h{h}_vs_h1"] = [a - b for a, b in zip(
            by[h]["test_accuracy"], by["1"]["test_accuracy"], strict=True)]
    if numbers.get("translation"):
        tr = numbers["translation"]["per_seed"]
        out["translation_best_dev_head_test_aer"] = [r["best_dev_head_test_aer"] for r in tr]
        out["translation_diagonal_test_aer"] = [r["test_diagonal_aer"] for r in tr]
        out["translation_token_accuracy"] = [r["token_accuracy"] for r in tr]
    return out


def verdict(numbers: dict, config) -> dict:
    per = per_seed_metrics(numbers, config)
    v = config.verdict
    specialised = [n >= v.min_specialised for n in per["specialised_heads"]]
    messy = [f >= v.messy_fraction for f in per["no_clean_role_fraction"]]
    passes = [a and b for a, b in zip(specialised, messy, strict=True)]
    cls, k_of_n = experiment.seed_verdict(passes, holds_at=v.holds_at, fails_at=v.fails_at)
    m = {name: stats.summary(x) for name, x in per.items()}
    counts = {}
    for i in range(len(numbers["seeds"])):
        for _, c in seed_heads(numbers, i):
            counts[c] = counts.get(c, 0) + 1
    total = sum(counts.values())
    h = numbers["coreference"]["num_heads"]
    if cls == "claim holds":
        why = "heads specialise, and many have no clean role"
    elif cls == "mixed":
        why = "the seeds disagree"
    elif not any(specialised):
        why = "no head has a role"
    else:
        why = "every head fits exactly one role" if not any(messy) else \
            "specialised and messy heads do not occur in the same seeds"
    reasons = (
        f"{why}; the per-seed test (>= {v.min_specialised} specialised head and >= "
        f"{v.messy_fraction:.0%} of heads without a clean role) holds in {k_of_n}; "
        f"specialised heads per seed {stats.format_summary(m['specialised_heads'], '.1f')}, "
        "fraction without a clean role "
        f"{stats.format_summary(m['no_clean_role_fraction'], percent=True)}"
        f" (95% bootstrap intervals over seeds)"
    )
    by = numbers["coreference"]["by_num_heads"]
    measured = (
        f"over {len(numbers['seeds'])} seeds: head classes "
        + ", ".join(f"{c} {counts[c]}" for c in CLASSES if c in counts)
        + f" of {total} heads; coreference test accuracy "
        + ", ".join(f"h={hh} "
                    f"{stats.format_summary(stats.summary(x['test_accuracy']), percent=True)}"
                    for hh, x in by.items())
        + " (" + ", ".join(f"h={hh}: {x['num_params']} params" for hh, x in by.items()) + "); "
        f"ablating one of the {h}-head model's heads costs at most "
        f"{stats.format_summary(m['max_ablation_drop'], percent=True)} and < "
        f"{v.harmless_drop:.0%} for {stats.format_summary(m['removable_fraction'], percent=True)}"
        " of heads"
    )
    if "translation_best_dev_head_test_aer" in m:
        measured += (
            "; translation: the dev-chosen cross-attention head's test AER "
            f"{stats.format_summary(m['translation_best_dev_head_test_aer'])} vs the diagonal "
            f"{stats.format_summary(m['translation_diagonal_test_aer'])}, token accuracy "
            f"{stats.format_summary(m['translation_token_accuracy'], percent=True)}")
    return {"verdict": f"{cls}: {reasons}", "measured": measured, "class": cls,
            "passes": passes, "metrics": m, "class_counts": counts}


# --------------------------------------------------------------------------- plots


def plot(numbers: dict, config, run_dir) -> list[str]:
    coref = numbers["coreference"]
    first = coref["per_seed"][0]
    scores = {k: np.asarray(v) for k, v in first["head_scores"].items()}
    probe, drop = np.asarray(first["antecedent_probe"]), np.asarray(first["test_ablation_drop"])
    layers, heads = probe.shape
    figure = Figure(figsize=(15, 3.2 + 0.5 * layers))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    table = np.stack([scores["offset_-1"], scores["offset_1"], scores["first_token"],
                      scores["punctuation"], scores["normalized_entropy"], probe], axis=-1)
    names = ["prev", "next", "first", "punct", "entropy", "coref probe"]
    image = axes[0].imshow(table.reshape(layers * heads, -1), vmin=0, vmax=1, aspect="auto")
    axes[0].set(xticks=range(len(names)), xticklabels=names, yticks=range(layers * heads),
                yticklabels=[f"L{la}H{he} {first['classes'][la][he]}"
                             for la in range(layers) for he in range(heads)],
                title=f"what each head does (seed {first['seed']}, dev)")
    figure.colorbar(image, ax=axes[0], fraction=0.04)
    axes[1].imshow(drop * 100, cmap="Reds", aspect="auto")
    axes[1].set(xlabel="head", ylabel="layer", xticks=range(heads), yticks=range(layers),
                title="test accuracy drop when ablated (points)")
    for (la, he), value in np.ndenumerate(drop):
        axes[1].text(he, la, f"{100 * value:.1f}", ha="center", va="center", fontsize=8)
    by = coref["by_num_heads"]
    for x, record in enumerate(by.values()):
        values = 100 * np.asarray(record["test_accuracy"])
        axes[2].bar(x, values.mean(), color="C0", alpha=0.5)
        axes[2].plot([x] * len(values), values, "k.")
    axes[2].set(xticks=range(len(by)), xticklabels=list(by),
                xlabel="heads (same model_dim, same parameters)", ylabel="test accuracy %",
                title="1 head vs h heads (bars: mean, dots: seeds)")
    figure.tight_layout()
    path = run_dir.figure_path("heads")
    figure.savefig(path, dpi=100)
    return [path.name]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    judged = verdict(numbers, config)
    per = per_seed_metrics(numbers, config)
    h = numbers["coreference"]["num_heads"]
    headline = ["specialised_heads", "no_clean_role_fraction"]
    if f"accuracy_gain_h{h}_vs_h1" in per:
        headline.append(f"accuracy_gain_h{h}_vs_h1")
    return {
        "claim": CLAIM, "rule": rule_text(config), "verdict": judged["verdict"],
        "measured": judged["measured"], "seeds": numbers["seeds"],
        "metrics": judged["metrics"], "headline": headline,
        "class_counts": judged["class_counts"], "passes": judged["passes"],
        # Voita et al. 2019 and Michel et al. 2019 prune heads of WMT/BERT models; no table
        # of theirs measures this toy setting, so no published figure is put beside ours.
        "published": [],
        "published_note": ("Michel et al. 2019 and Voita et al. 2019 report that most heads "
                           "of trained NMT/BERT models can be removed alone at little cost; "
                           "their settings (WMT, BERT) differ from these toy tasks, so no "
                           "number is compared."),
        "numbers": numbers,
        "figures": plot(numbers, config, run_dir),
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
