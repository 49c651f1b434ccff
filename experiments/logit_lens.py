"""The logit lens (nostalgebraist 2020): does the residual stream reach the prediction only late?

SmolLM2-135M-Instruct (30 layers) reads short English sentences: the three seed sentences and
24 more written for this experiment (``SENTENCES``; not drawn from any corpus). The residual
stream at every depth (the token embeddings, then each layer's output) goes through the
model's own final RMSNorm and tied unembedding (``CausalLM.unembed``), which at the last layer
gives the model's logits exactly. Per token position (items: tokens, grouped by sentence; no
seeds, a pretrained model; 95% intervals resample whole sentences):

* the *settling layer*: the first depth from which the lens's top-1 token is the model's
  final top-1 at every later depth (the last layer always qualifies);
* per depth: the rank and log-probability of the final top-1 under the lens, whether the
  lens's top-1 is it, whether the lens's top-1 is the current input token (the lens still
  "reading" the input), and KL(final || lens) in nats.

The lens reads the whole residual stream, which attention and MLP sublayers write alike:
this measures when the prediction forms, not which sublayer forms it.

    python -m experiments.logit_lens [--config configs/logit_lens.py[:smoke]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import experiment, stats
from attnjax import nn as ann
from experiments import REGISTRY, _llm

NAME = "logit_lens"
CLAIM = REGISTRY[NAME].claim
SEED_SENTENCES = (
    "The trophy didn't fit in the suitcase because it was too big.",
    "The capital of France is Paris.",
    "She sat on the river bank and watched the water.",
)
# Written for this experiment: everyday sentences of varied topic and syntax.
SENTENCES = SEED_SENTENCES + (
    "My grandmother bakes bread every Sunday morning.",
    "The train to London leaves at half past nine.",
    "He forgot his umbrella, so he got wet in the rain.",
    "Water boils at one hundred degrees Celsius.",
    "The children played football in the park after school.",
    "Please close the door when you leave the room.",
    "The doctor told him to drink more water and rest.",
    "Cats like to sleep in warm and quiet places.",
    "The meeting was moved from Tuesday to Thursday.",
    "She opened the letter and began to read it slowly.",
    "The moon orbits the Earth about once a month.",
    "Our neighbours bought a new red car last week.",
    "The museum is closed on Mondays and public holidays.",
    "He plays the guitar in a small band with his friends.",
    "The price of coffee has gone up again this year.",
    "Birds fly south for the winter to find food.",
    "The teacher asked the students to open their books.",
    "It was so cold that the lake froze overnight.",
    "The library lends books, films and music for free.",
    "After dinner we went for a walk along the beach.",
    "The baby laughed when the dog licked her hand.",
    "The old bridge was repaired after the storm.",
    "Shakespeare wrote many plays, including Hamlet and Macbeth.",
    "Tomorrow the weather will be sunny with a light breeze.",
)
RULE = (
    "Items: the tokens of {num_sentences} sentences (seed sentences plus sentences written "
    "for this experiment); no seeds, 95% intervals bootstrap over sentences ({num_resamples} "
    "resamples). The residual stream after each of the L={num_layers} layers (and the "
    "embeddings, depth 0) is read through the final norm and unembedding. Two parts: (1) "
    "later layers: the median over tokens of the settling layer (the first depth from which "
    "the lens's top-1 is the model's final top-1 at every later depth) lies in the last third: "
    "holds if its interval's lower end is above {late_layer:.1f} ({late_fraction:.2f} L), "
    "does not hold otherwise; (2) builds up through depth: the Spearman correlation between "
    "depth (0 .. L-1) and the token-mean KL(final || lens) is below {max_spearman}: holds if "
    "its interval's upper end is, does not hold otherwise. The claim holds if both hold, does "
    "not hold if neither does, mixed otherwise."
)
HEADLINE = ["median_settling_layer", "kl_depth_spearman", "top1_agreement_two_thirds"]


def rule(config, num_layers: int = 30) -> str:
    """The pre-registered rule with this config's thresholds (SmolLM2: L = 30)."""
    return RULE.format(num_sentences=len(sentences(config)), num_resamples=config.num_resamples,
                       num_layers=num_layers, late_layer=config.late_fraction * num_layers,
                       late_fraction=config.late_fraction, max_spearman=config.max_spearman)


def sentences(config) -> tuple[str, ...]:
    return SENTENCES[: config.num_sentences or None]


# --------------------------------------------------------------------------- the lens


def lens_statistics(log_probs: jax.Array, final_log_probs: jax.Array, inputs: jax.Array
                    ) -> dict[str, jax.Array]:
    """Per-token statistics of one depth's lens distribution against the final one.

    Args:
      log_probs: ``[N, V]`` the lens's log-probabilities at N token positions.
      final_log_probs: ``[N, V]`` the model's own (the lens at the last layer).
      inputs: ``[N]`` the input token at each position.

    Returns:
      ``top1 [N]`` the lens's top token; ``rank [N]`` how many tokens the lens ranks above
      the final top-1 (0 = it is the lens's top-1); ``log_prob [N]`` the lens's
      log-probability of the final top-1; ``kl [N]`` KL(final || lens) in nats;
      ``is_input [N]`` whether the lens's top-1 is the input token.
    """
    final_top = jnp.argmax(final_log_probs, axis=-1)
    top1 = jnp.argmax(log_probs, axis=-1)
    target = jnp.take_along_axis(log_probs, final_top[:, None], axis=-1)[:, 0]
    rank = (log_probs > target[:, None]).sum(-1)
    kl = (jnp.exp(final_log_probs) * (final_log_probs - log_probs)).sum(-1)
    return {"top1": top1, "rank": rank, "log_prob": target, "kl": kl,
            "is_input": top1 == inputs}


def lens_fn(config: ann.TransformerConfig):
    """jitted ``(decoder_params, stream [L + 1, N, D], inputs [N]) -> statistics [L + 1, N]``
    (``lens_statistics`` at every depth, the last depth's distribution as the final one).

    The unembedding is ``CausalLM.unembed`` (final norm, then the tied embedding or the
    output kernel) with the parameters passed in, so they are not baked into the program;
    one depth at a time (``lax.map``) keeps one ``[N, V]`` distribution in memory.
    """
    norm = ann.transformer.make_norm(config, "final_norm")

    def log_probs(decoder, hidden):
        x = norm.apply({"params": decoder["final_norm"]}, hidden)
        kernel = (decoder["embed"]["embedding"].T if config.tie_embeddings
                  else decoder["logits"]["kernel"])
        return jax.nn.log_softmax((x @ kernel).astype(jnp.float32), axis=-1)

    @jax.jit
    def run(decoder, stream, inputs):
        final = log_probs(decoder, stream[-1])
        return jax.lax.map(lambda h: lens_statistics(log_probs(decoder, h), final, inputs),
                           stream)

    return run


def settling_layer(agrees: np.ndarray) -> np.ndarray:
    """``agrees [L + 1, N]`` bool (lens top-1 == final top-1 at each depth) -> ``[N]`` the
    first depth from which every later depth agrees. The last depth must agree (it is the
    final prediction); a ``ValueError`` otherwise."""
    agrees = np.asarray(agrees, bool)
    if not agrees[-1].all():
        raise ValueError("settling_layer: the last depth must agree with itself everywhere")
    # Walking back from the last depth, the run of agreement breaks at the last disagreement.
    run = np.logical_and.accumulate(agrees[::-1], axis=0)[::-1]
    return agrees.shape[0] - run.sum(axis=0)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of ``x [L]`` with each row of ``y [..., L]`` (no ties
    assumed: ranks by ``argsort``; KLs are continuous)."""
    def ranks(a):
        return np.argsort(np.argsort(a, axis=-1), axis=-1).astype(np.float64)

    rx, ry = ranks(np.asarray(x)), ranks(np.asarray(y))
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    return (ry * rx).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))


# --------------------------------------------------------------------------- bootstrap


def sentence_weights(groups: np.ndarray, num_resamples: int, seed: int) -> np.ndarray:
    """``[R, N]`` token weights of a bootstrap over sentences: each resample draws the
    sentences with replacement, and a token counts as often as its sentence was drawn.
    ``groups [N]`` is each token's sentence index (0 .. S-1, every one present)."""
    groups = np.asarray(groups)
    s = int(groups.max()) + 1
    draws = np.random.default_rng(seed).integers(0, s, size=(num_resamples, s))
    counts = np.stack([np.bincount(row, minlength=s) for row in draws])  # [R, S]
    return counts[:, groups].astype(np.float64)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``values [N]``, ``weights [R, N]`` -> ``[R]`` the lower weighted median of each row
    (the smallest value whose cumulative weight reaches half the total)."""
    order = np.argsort(values, kind="stable")
    v, w = np.asarray(values, np.float64)[order], weights[:, order]
    cumulative = np.cumsum(w, axis=1)
    index = (cumulative >= cumulative[:, -1:] / 2).argmax(axis=1)
    return v[index]


def interval_record(point: float, resampled: np.ndarray, n: int) -> dict:
    lo, hi = np.quantile(resampled, [0.025, 0.975])
    return {"mean": float(point), "ci95": [float(lo), float(hi)], "n": int(n)}


# --------------------------------------------------------------------------- measuring


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir, model=None) -> dict:
    model = model or _llm.load(config)
    texts = sentences(config)
    prefix = [config.prefix_id] if config.prefix_id >= 0 else []
    rows = [prefix + model.tokenize(t) for t in texts]
    encoded = model.encode(rows, attention=True)  # one batch: one shape
    start = len(prefix)
    where = [(b, t) for b, r in enumerate(rows) for t in range(start, len(r))]
    batch, position = (np.array(a) for a in zip(*where, strict=True))
    stream = encoded.hidden_states[:, batch, position]  # [L + 1, N, D]
    inputs = encoded.tokens[batch, position]
    out = jax.device_get(lens_fn(model.config)(model.params["decoder"], jnp.asarray(stream),
                                               jnp.asarray(inputs)))
    depth_count = stream.shape[0]
    num_layers = depth_count - 1
    agrees = out["rank"] == 0
    settle = settling_layer(agrees)
    groups = batch
    weights = sentence_weights(groups, config.num_resamples, config.bootstrap_seed)
    total = weights.sum(1, keepdims=True)

    def weighted_means(per_token):  # [D, N] -> ([D] point, [R, D] resampled)
        return per_token.mean(-1), weights @ per_token.T / total

    kl_point, kl_resampled = weighted_means(out["kl"])
    depths = np.arange(num_layers)  # depth L is the final distribution itself: KL 0
    spearman_point = float(spearman(depths, kl_point[:num_layers]))
    spearman_resampled = spearman(depths, kl_resampled[:, :num_layers])
    two_thirds = int(np.ceil(config.late_fraction * num_layers))
    per_depth = {}
    for key, values in (("kl", out["kl"]), ("top1_agreement", agrees.astype(float)),
                        ("log_prob_final_top1", out["log_prob"]),
                        ("input_top1", out["is_input"].astype(float))):
        point, resampled = weighted_means(np.asarray(values, np.float64))
        lo, hi = np.quantile(resampled, [0.025, 0.975], axis=0)
        per_depth[key] = {"mean": point.tolist(), "ci95": [lo.tolist(), hi.tolist()]}
    per_depth["median_rank_final_top1"] = np.median(out["rank"], axis=1).tolist()
    metrics = {
        "median_settling_layer": interval_record(
            np.median(settle), weighted_median(settle, weights), len(settle)),
        "mean_settling_layer": interval_record(
            settle.mean(), weights @ settle / total[:, 0], len(settle)),
        "kl_depth_spearman": interval_record(spearman_point, spearman_resampled,
                                             len(texts)),
        "top1_agreement_two_thirds": _depth_metric(per_depth, "top1_agreement", two_thirds,
                                                   len(settle)),
        "top1_agreement_middle": _depth_metric(per_depth, "top1_agreement", num_layers // 2,
                                               len(settle)),
        "kl_middle": _depth_metric(per_depth, "kl", num_layers // 2, len(settle)),
        "input_top1_embeddings": _depth_metric(per_depth, "input_top1", 0, len(settle)),
        "settled_by_middle": interval_record(
            np.mean(settle <= num_layers // 2), weights @ (settle <= num_layers // 2)
            / total[:, 0], len(settle)),
    }
    pieces = [[model.tokenizer.id_to_token(int(i)) for i in r] for r in rows]
    final_top = out["top1"][-1]
    # What the lens shows at the middle depth, where it rarely shows the final prediction.
    ids, counts = np.unique(out["top1"][num_layers // 2], return_counts=True)
    common = [{"token": model.decode([int(ids[j])]), "fraction": float(counts[j] / len(settle))}
              for j in np.argsort(-counts, kind="stable")[:3]]
    for i in range(len(settle)):
        b, t = int(batch[i]), int(position[i])
        run_dir.log({"sentence": b, "position": t, "input": pieces[b][t],
                     "final_top1": model.decode([int(final_top[i])]),
                     "settling_layer": int(settle[i]),
                     "kl": [float(v) for v in out["kl"][:, i]],
                     "rank": [int(v) for v in out["rank"][:, i]]})
    shown = config.figure_sentence
    mask = batch == shown
    table = {"sentence": texts[shown], "inputs": [pieces[shown][t] for t in position[mask]],
             "top1": [[model.decode([int(v)]) for v in out["top1"][d, mask]]
                      for d in range(depth_count)],
             "log_prob_final_top1": np.asarray(out["log_prob"])[:, mask].tolist(),
             "agrees": agrees[:, mask].tolist()}
    return {
        "model": str(model.path), "sentences": list(texts), "tokens": int(len(settle)),
        "num_layers": num_layers, "two_thirds_layer": two_thirds,
        "settling_layer": settle.tolist(), "sentence_of_token": groups.tolist(),
        "settling_histogram": np.bincount(settle, minlength=depth_count).tolist(),
        "middle_common_top1": common,
        "per_depth": per_depth, "metrics": metrics, "table": table,
    }


def _depth_metric(per_depth: dict, key: str, depth: int, n: int) -> dict:
    record = per_depth[key]
    return {"mean": record["mean"][depth], "ci95": [record["ci95"][0][depth],
                                                    record["ci95"][1][depth]],
            "n": n, "depth": depth}


# --------------------------------------------------------------------------- verdict


def parts(numbers: dict, config) -> dict[str, str]:
    m = numbers["metrics"]
    late = config.late_fraction * numbers["num_layers"]
    return {
        "later_layers": ("claim holds" if m["median_settling_layer"]["ci95"][0] > late
                         else "claim does not hold here"),
        "builds_up": ("claim holds" if m["kl_depth_spearman"]["ci95"][1] < config.max_spearman
                      else "claim does not hold here"),
    }


def verdict(numbers: dict, config) -> dict:
    """``{"verdict", "measured"}``: a pure function of the numbers and the thresholds."""
    p = parts(numbers, config)
    cls = experiment.combine_verdicts(p)
    m = numbers["metrics"]
    fmt = stats.format_summary
    num_layers = numbers["num_layers"]
    late = config.late_fraction * num_layers
    middle = num_layers // 2
    kl = numbers["per_depth"]["kl"]["mean"]
    increases = [d for d in range(1, num_layers) if kl[d] > kl[d - 1]]
    median = m["median_settling_layer"]["mean"]
    where = ("in the last third" if median > late else
             "in the middle third" if median > num_layers / 3 else "in the first third")
    caveat = []
    last_only = numbers["settling_histogram"][-1] / numbers["tokens"]
    if last_only > 0.25:
        caveat.append(f"for {last_only:.0%} of tokens the lens disagrees with the final "
                      f"top-1 even at layer {num_layers - 1}: the prediction is fixed by the "
                      f"last layer, not built up")
    if m["settled_by_middle"]["mean"] > 0.25:
        caveat.append(f"{m['settled_by_middle']['mean']:.0%} of tokens have settled by layer "
                      f"{middle}: for those the prediction is there early, against 'only in "
                      f"the later layers'")
    if m["top1_agreement_middle"]["mean"] < 0.25:
        shown = ", ".join(f"{c['token']!r} {c['fraction']:.0%}"
                          for c in numbers.get("middle_common_top1", []))
        caveat.append(f"at layer {middle} the lens's top-1 is the final one for only "
                      f"{m['top1_agreement_middle']['mean']:.0%} of tokens"
                      + (f" (its commonest top-1 tokens there: {shown})" if shown else "")
                      + ": the middle lens is close to unreadable")
    peak = int(np.argmax(kl[1:num_layers])) + 1
    if peak > 1 and kl[peak] > kl[1]:
        caveat.append(f"the mean KL rises from {kl[1]:.1f} nats at layer 1 to {kl[peak]:.1f} "
                      f"at layer {peak} before it falls")
    if increases:
        caveat.append(f"it rises from one depth to the next at {len(increases)} of "
                      f"{num_layers - 1} steps (depths {', '.join(map(str, increases[:8]))}"
                      f"{', ...' if len(increases) > 8 else ''}): not monotone")
    measured = (
        f"SmolLM2-135M-Instruct (L={num_layers}), {numbers['tokens']} tokens of "
        f"{len(numbers['sentences'])} sentences [95% interval over sentences]: the lens's "
        f"top-1 settles on the final prediction at median layer "
        f"{fmt(m['median_settling_layer'], '.1f')} (mean {fmt(m['mean_settling_layer'], '.1f')}; "
        f"{where}); lens top-1 = final top-1 for {fmt(m['top1_agreement_middle'], '.2f')} of "
        f"tokens at layer {middle} and {fmt(m['top1_agreement_two_thirds'], '.2f')} at layer "
        f"{numbers['two_thirds_layer']}; mean KL(final || lens) {kl[0]:.1f} nats at the "
        f"embeddings, {fmt(m['kl_middle'], '.1f')} at layer {middle}, {kl[num_layers - 1]:.2f} "
        f"at layer {num_layers - 1}, Spearman with depth {fmt(m['kl_depth_spearman'], '.2f')}; "
        f"at the embeddings the lens's top-1 is the input token itself for "
        f"{fmt(m['input_top1_embeddings'], '.2f')} of tokens"
        + (". Against the claim: " + "; ".join(caveat) if caveat else ""))
    reasons = (
        f"median settling layer {fmt(m['median_settling_layer'], '.1f')} vs the last third "
        f"(> {late:.1f}) ({p['later_layers']}); Spearman(depth, KL) "
        f"{fmt(m['kl_depth_spearman'], '.2f')} vs {config.max_spearman} ({p['builds_up']}) "
        f"(intervals over sentences; no seeds, a pretrained model; the lens reads the whole "
        f"residual stream, so attention and MLP sublayers share the credit)")
    return {"verdict": f"{cls}: {reasons}", "measured": measured}


# nostalgebraist 2020, "interpreting GPT: the logit lens" (LessWrong / greaterwrong.com,
# Aug 31 2020), quoted from the post's summary.
NOSTALGEBRAIST = {
    "converge": '"These distributions gradually converge to the final distribution over the '
                'layers of the network, often getting close to that distribution long before '
                'the end."',
    "middle": '"At some point in the middle, GPT will have formed a \u201cpretty good guess\u201d '
              'as to the next token, and the later layers seem to be refining these guesses"',
    "other_models": '"trying out a variant of the \u201cdecoder\u201d used in this post, which '
                    'dramatically helps with interpreting some models" (the 2021 edit)',
}
PUBLISHED_NOTE = (
    "nostalgebraist 2020, 'interpreting GPT: the logit lens' (LessWrong), its summary, read "
    "from the post; qualitative (pictures of GPT-2 on a few prompts), no table. Theirs: "
    "GPT-2 (1.5B, 48 layers, LayerNorm); ours: SmolLM2-135M-Instruct (30 layers, RMSNorm, "
    "tied embeddings) on short sentences. Note the post itself says the guess forms 'in the "
    "middle', which is earlier than the registered claim's 'only in the later layers'.")


def published(numbers: dict, config) -> list[dict]:
    m = numbers["metrics"]
    num_layers = numbers["num_layers"]
    setting = (f"theirs: GPT-2 on a few prompts, by eye; ours: SmolLM2-135M-Instruct, "
               f"{numbers['tokens']} tokens of {len(numbers['sentences'])} sentences")
    return [
        {"source": "nostalgebraist 2020, summary", "quote": NOSTALGEBRAIST["converge"],
         "metric": "lens distribution vs depth", "value": "gradual convergence to the final",
         "ours": f"Spearman(depth, KL) {m['kl_depth_spearman']['mean']:.2f}",
         "setting": setting},
        {"source": "nostalgebraist 2020, summary", "quote": NOSTALGEBRAIST["middle"],
         "metric": "where the next-token guess forms", "value": "in the middle layers",
         "ours": f"median settling layer {m['median_settling_layer']['mean']:.1f} of "
                 f"{num_layers}; top-1 agreement {m['top1_agreement_middle']['mean']:.0%} at "
                 f"layer {num_layers // 2}",
         "setting": setting},
    ]


# --------------------------------------------------------------------------- figures


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> list[str]:
    names = []
    table = numbers["table"]
    log_prob = np.array(table["log_prob_final_top1"])  # [L + 1, n]
    agrees = np.array(table["agrees"])
    depth_count, n = log_prob.shape
    figure = Figure(figsize=(1.0 + 0.95 * n, 0.5 + 0.26 * depth_count))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    image = ax.imshow(np.exp(log_prob), cmap="Blues", vmin=0, vmax=1, aspect="auto",
                      origin="lower")
    for d in range(depth_count):
        for t in range(n):
            word = _visible(table["top1"][d][t])
            ax.text(t, d, word, ha="center", va="center", fontsize=6,
                    color="black" if not agrees[d, t] else "darkred")
    ax.set(xticks=range(n), xticklabels=[p.replace("Ġ", " ") for p in table["inputs"]],
           yticks=range(0, depth_count, 2), ylabel="depth (0 = embeddings)",
           title=f"logit lens, top-1 per depth: {table['sentence']} (shade: lens probability "
                 f"of the final top-1; red: lens top-1 = final)")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.title.set_fontsize(8)
    figure.colorbar(image, ax=ax, fraction=0.02)
    figure.tight_layout()
    path = run_dir.figure_path("logit_lens_table")
    figure.savefig(path, dpi=110)
    names.append(path.name)

    figure = Figure(figsize=(11, 3.8))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    depth = np.arange(numbers["num_layers"] + 1)
    for ax, key, label in ((left, "kl", "mean KL(final || lens), nats"),
                           (middle, "top1_agreement", "lens top-1 = final top-1"),
                           (middle, "input_top1", "lens top-1 = input token")):
        record = numbers["per_depth"][key]
        ax.plot(depth, record["mean"], label=label)
        ax.fill_between(depth, *record["ci95"], alpha=0.25)
    left.set(xlabel="depth", ylabel="nats", yscale="symlog", title="KL to the final distribution")
    middle.set(xlabel="depth", ylabel="fraction of tokens", ylim=(0, 1.02),
               title="top-1 agreement")
    middle.legend(fontsize=7)
    late = config.late_fraction * numbers["num_layers"]
    for ax in (left, middle):
        ax.axvline(late, color="grey", ls=":", lw=1)
    right.bar(depth, numbers["settling_histogram"])
    right.axvline(late, color="grey", ls=":", lw=1)
    right.set(xlabel="settling layer", ylabel="tokens",
              title="from which depth the final top-1 stays")
    figure.suptitle("bands: 95% interval over sentences; dotted: the last third starts")
    figure.tight_layout()
    path = run_dir.figure_path("logit_lens_depth")
    figure.savefig(path, dpi=100)
    names.append(path.name)
    return names


def _visible(text: str, width: int = 9) -> str:
    """A token as the table prints it: newlines as ``\\n``, a bare space as ``␣``."""
    text = text.replace("\n", "\\n")
    return (text if text.strip() else text.replace(" ", "\u2423"))[:width]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    return {**numbers, "claim": CLAIM, "rule": rule(config, numbers["num_layers"]),
            **verdict(numbers, config), "seeds": [], "headline": HEADLINE,
            "published": published(numbers, config), "published_note": PUBLISHED_NOTE,
            "figures": plot(numbers, config, run_dir)}


if __name__ == "__main__":
    experiment.main(NAME, run)
