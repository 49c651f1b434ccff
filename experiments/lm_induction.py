"""Induction heads in a real LLM: SmolLM2-135M-Instruct on repeated random token sequences.

Each sequence is ``[prefix, x_1 .. x_N, x_1 .. x_N]``: N distinct tokens drawn at random from
ordinary English word pieces, then the same N again. Nothing predicts the first copy; the
repeat is predictable, but only by looking back: find the previous occurrence of the current
token and copy what followed it, the algorithm of an *induction head* (Olsson et al. 2022).
Per sequence (items; no seeds, a pretrained model; 95% intervals bootstrap over sequences):

* the in-context score: mean next-token loss on the first copy's ``x_2 .. x_N`` minus the
  repeat's (nats; 0 = the context does not help);
* for all 30 x 9 = 270 heads, the prefix-matching score (attention from a repeated token to
  the token after its previous occurrence) and the previous-token score (attention to
  position ``t - 1``);
* the top-k heads by prefix-matching on the SELECTION half of the sequences, mean- (and
  zero-) ablated on the HELD-OUT half: how much the repeat's loss rises, beside k random
  heads of the same layers (several draws, never a chosen head), paired per sequence.

Ablation runs through one jitted forward pass whose head mask is an array, not a static
argument (``analysis.ablate_heads`` takes the heads as a static map, so every ablated set
would be a new compilation of the 30-layer model); ``tests/test_exp_lm_induction.py``
checks it against ``analysis.ablate_heads`` on a small model.

    python -m experiments.lm_induction [--config configs/lm_induction.py[:tour|:smoke]]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, stats
from attnjax.data import published as published_figures
from attnjax.nn.attention import MultiHeadAttention
from experiments import REGISTRY, _llm

NAME = "lm_induction"
CLAIM = REGISTRY[NAME].claim
RULE = (
    "Items: {num_sequences} sequences [prefix, x, x] of N={half_length} distinct random "
    "ordinary word tokens; no seeds, 95% intervals bootstrap over sequences. The first "
    "{num_selection} sequences select, the other {num_heldout} are held out. Four parts, each "
    "holding if its interval's lower end clears the bar and not holding otherwise: (1) "
    "in-context learning: first-copy loss minus repeat loss (all sequences) > {icl_threshold} "
    "nats; (2) an induction head exists: the head with the highest selection prefix-matching "
    "score (attention from a repeated token to the token after its previous occurrence) has "
    "held-out prefix-matching > {prefix_threshold}; (3) targeted beats random: {mode}-"
    "ablating the top {num_ablated} selection heads raises the held-out repeat loss more "
    "than ablating {num_ablated} random heads of the same layers (mean over {control_draws} "
    "draws, never a chosen head): paired difference > 0; (4) removing them removes the "
    "in-context gain: with them ablated the held-out in-context score falls by more than "
    "{removed_fraction:.0%} (1 - mean ablated score / mean score over the held-out sequences, "
    "a ratio of means). The claim holds if all four hold, does not hold if none does, mixed "
    "otherwise."
)
HEADLINE = ["icl_score", "top_head_prefix_matching", "rise_induction_minus_control"]
WORD_PIECE = re.compile(r"^Ġ[A-Za-z]{2,}$")  # byte-level BPE: Ġ is the leading space


def rule(config) -> str:
    """The pre-registered rule with this config's thresholds."""
    selection, heldout = split_sizes(config.num_sequences)
    return RULE.format(num_sequences=config.num_sequences, half_length=config.half_length,
                       num_selection=selection, num_heldout=heldout,
                       icl_threshold=config.icl_threshold,
                       prefix_threshold=config.prefix_threshold, mode=config.ablation_modes[0],
                       num_ablated=config.num_ablated, control_draws=config.control_draws,
                       removed_fraction=config.removed_fraction)


def split_sizes(num_sequences: int) -> tuple[int, int]:
    """``(selection, held-out)``: the first half selects, the rest is held out."""
    if num_sequences < 4:
        raise ValueError(f"num_sequences must be >= 4 (two per half), got {num_sequences}")
    return num_sequences // 2, num_sequences - num_sequences // 2


# --------------------------------------------------------------------------- data


def ordinary_token_ids(pieces: Sequence[str], first_id: int = 0) -> np.ndarray:
    """The ids (``first_id + i``) of the pieces that are a space then >= 2 ASCII letters
    (``"Ġcatalyst"``): whole words, so a repeat is never a token boundary artefact."""
    return np.array([first_id + i for i, p in enumerate(pieces) if WORD_PIECE.match(p)],
                    np.int32)


def repeated_sequences(rng: np.random.Generator, num: int, half_length: int,
                       token_ids: np.ndarray, prefix_id: int) -> np.ndarray:
    """``[num, 1 + 2 N]`` int32 rows ``[prefix, x, x]``, ``x`` of ``N = half_length`` ids
    drawn from ``token_ids`` without replacement (so each token's previous occurrence is
    unique)."""
    token_ids = np.asarray(token_ids)
    if token_ids.size < half_length:
        raise ValueError(f"repeated_sequences: {token_ids.size} token ids cannot fill "
                         f"half_length={half_length} without repeats")
    x = np.stack([rng.choice(token_ids, half_length, replace=False) for _ in range(num)])
    prefix = np.full((num, 1), prefix_id)
    return np.concatenate([prefix, x, x], axis=1).astype(np.int32)


def loss_positions(half_length: int) -> dict[str, np.ndarray]:
    """Indices into the ``[2 N]`` next-token losses of a ``[1 + 2 N]`` sequence (loss ``p``
    predicts token ``p + 1``): ``first`` predicts the first copy's ``x_2 .. x_N`` (tokens
    ``2 .. N``), ``repeat`` the repeat's ``x_2 .. x_N`` (tokens ``N + 2 .. 2 N``). Both
    copies' ``x_1`` are left out: no context predicts them (the repeat's follows ``x_N``,
    seen once). Same targets as ``attnjax.data.induction.copy_targets`` with period N."""
    n = half_length
    return {"first": np.arange(1, n), "repeat": np.arange(n + 1, 2 * n)}


def pattern_scores(weights: np.ndarray, half_length: int) -> dict[str, np.ndarray]:
    """Per-sequence head scores of ``[prefix, x, x]`` inputs.

    Args:
      weights: ``[L, B, H, T, T]`` attention weights, ``T = 1 + 2 N``.
      half_length: N.

    Returns:
      ``prefix_matching [B, L, H]``: mean over the repeat's queries ``q = N + 1 .. 2 N``
      (token ``x_j``) of the weight on key ``q - N + 1``, the token after ``x_j``'s first
      occurrence (for ``q = 2 N`` that is the repeat's ``x_1``); ``previous_token
      [B, L, H]``: mean over ``q = 1 .. T - 1`` of the weight on key ``q - 1``.
    """
    w = np.asarray(weights)
    n = half_length
    if w.ndim != 5 or w.shape[-1] != w.shape[-2] or w.shape[-1] != 1 + 2 * n:
        raise ValueError(f"pattern_scores: `weights` must be [L, B, H, T, T] with T = 1 + 2 N "
                         f"= {1 + 2 * n}, got {list(w.shape)}")
    queries = np.arange(n + 1, 2 * n + 1)
    prefix = w[..., queries, queries - n + 1].mean(-1)  # [L, B, H]
    rows = np.arange(1, 2 * n + 1)
    previous = w[..., rows, rows - 1].mean(-1)
    return {"prefix_matching": prefix.transpose(1, 0, 2),
            "previous_token": previous.transpose(1, 0, 2)}


# --------------------------------------------------------------------------- heads


def top_heads(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The ``k`` ``(layer, head)`` pairs of ``scores [L, H]`` with the highest scores,
    best first (ties: the lower flat index first)."""
    order = np.argsort(-np.asarray(scores).ravel(), kind="stable")[:k]
    return [tuple(int(i) for i in np.unravel_index(j, scores.shape)) for j in order]


def layer_matched_heads(rng: np.random.Generator, chosen: Sequence[tuple[int, int]],
                        num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """A random set of ``len(chosen)`` heads, none of them chosen, with as many in each
    layer as ``chosen`` has there (a layer without enough unchosen heads is filled up from
    the unchosen heads of other layers)."""
    chosen = {tuple(c) for c in chosen}
    drawn: list[tuple[int, int]] = []
    short = 0
    for layer in range(num_layers):
        want = sum(1 for c in chosen if c[0] == layer)
        pool = [(layer, h) for h in range(num_heads) if (layer, h) not in chosen]
        take = min(want, len(pool))
        short += want - take
        drawn += [pool[i] for i in rng.choice(len(pool), take, replace=False)] if take else []
    if short:
        rest = [(a, h) for a in range(num_layers) for h in range(num_heads)
                if (a, h) not in chosen and (a, h) not in drawn]
        drawn += [rest[i] for i in rng.choice(len(rest), short, replace=False)]
    return sorted(drawn)


def keep_mask(heads: Sequence[tuple[int, int]], num_layers: int, num_heads: int) -> np.ndarray:
    """``[L, H]`` bool, False at the ablated ``(layer, head)`` pairs."""
    keep = np.ones((num_layers, num_heads), bool)
    for layer, head in heads:
        keep[layer, head] = False
    return keep


def masked_forward(module: nn.Module, num_layers: int, path: str = "decoder/layer_{}/"
                   "self_attention"):
    """``f(params, tokens [B, T], keep [L, H] bool, fill [L, H, Dv]) -> (losses [B, T - 1],
    attention [L, B, H, T, T], head_sums [B, L, H, Dv])``, to be jitted once.

    Each attention module's per-head output (the ``[B, T, H, Dv]`` input of its output
    projection, as ``analysis.ablate_heads`` intercepts it) becomes ``fill[layer, h]`` where
    ``keep[layer, h]`` is False: zeros for zero-ablation, a mean for mean-ablation. Because
    ``keep`` and ``fill`` are arrays, one compilation serves every ablated set. ``losses``
    are the next-token cross-entropies, ``attention`` the weights after the ablation, and
    ``head_sums`` each head's output before the ablation, summed over positions (for means).
    """
    layer_of = {path.format(i): i for i in range(num_layers)}

    def forward(params, tokens, keep, fill):
        outputs = {}

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            if (context.method_name == "__call__" and mod.name == "out"
                    and isinstance(mod.parent, MultiHeadAttention)):
                layer = layer_of["/".join(mod.parent.path)]
                heads = args[0]  # [B, T, H, Dv]
                outputs[layer] = heads
                heads = jnp.where(keep[layer][:, None], heads, fill[layer].astype(heads.dtype))
                args = (heads, *args[1:])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            logits, maps = analysis.capture_attention(module, {"params": params}, tokens)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits[:, :-1].astype(jnp.float32), tokens[:, 1:])
        attention = jnp.stack([maps[path.format(i)] for i in range(num_layers)])
        head_sums = jnp.stack([outputs[i].sum(axis=1) for i in range(num_layers)], axis=1)
        return losses, attention, head_sums

    return forward


def run_batches(forward, params, tokens: np.ndarray, batch_size: int, keep, fill
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``forward`` over ``tokens [S, T]`` in batches of one shape (the last padded with
    copies of its first row, whose outputs are dropped); numpy results over S rows."""
    out = ([], [], [])
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size]
        rows = len(batch)
        if rows < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - rows, axis=0)])
        losses, attention, head_sums = forward(params, jnp.asarray(batch), keep, fill)
        out[0].append(np.asarray(losses)[:rows])
        out[1].append(np.asarray(attention)[:, :rows])
        out[2].append(np.asarray(head_sums)[:rows])
    return np.concatenate(out[0]), np.concatenate(out[1], axis=1), np.concatenate(out[2])


# --------------------------------------------------------------------------- measuring


def paired_summary(a, b) -> dict:
    """``mean(a - b)`` over paired items with its paired-bootstrap interval, as a metric."""
    paired = stats.paired_bootstrap(a, b)
    return {"mean": paired["difference"], "ci95": paired["ci95"], "n": len(a),
            "p_not_greater": paired["p_not_greater"]}


def removed_fraction(score: np.ndarray, ablated: np.ndarray) -> dict:
    """``1 - mean(ablated) / mean(score)`` over paired sequences (the share of the in-context
    score that the ablation removes), with a bootstrap interval over the sequences. A ratio
    of means, not a mean of per-sequence ratios: those are heavy-tailed where a sequence's
    score is near 0, and they count damage that raises the first copy's loss as well."""
    score, ablated = np.asarray(score, float), np.asarray(ablated, float)

    def statistic(resampled):
        index = resampled.astype(int)
        return 1.0 - ablated[index].sum(-1) / score[index].sum(-1)

    lo, hi = stats.bootstrap_ci(np.arange(score.size, dtype=float), statistic)
    return {"mean": float(1.0 - ablated.sum() / score.sum()), "ci95": [lo, hi],
            "n": int(score.size)}


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir, model=None) -> dict:
    model = model or _llm.load(config)
    num_layers, num_heads = model.config.num_layers, model.config.num_heads
    head_dim = model.config.model_dim // num_heads
    lo, hi = config.token_range
    pool = ordinary_token_ids([model.tokenizer.id_to_token(i) for i in range(lo, hi)], lo)
    tokens = repeated_sequences(np.random.default_rng(config.data_seed), config.num_sequences,
                                config.half_length, pool, config.prefix_id)
    num_selection, _ = split_sizes(config.num_sequences)
    selection, heldout = np.arange(num_selection), np.arange(num_selection, len(tokens))
    where = loss_positions(config.half_length)
    forward = jax.jit(masked_forward(model.module, num_layers))
    params = model.params

    def run(rows, keep, fill):
        return run_batches(forward, params, tokens[rows], config.batch_size,
                           jnp.asarray(keep), jnp.asarray(fill, jnp.float32))

    everything = np.ones((num_layers, num_heads), bool)
    zeros = np.zeros((num_layers, num_heads, head_dim), np.float32)
    losses, attention, head_sums = run(np.arange(len(tokens)), everything, zeros)
    scores = pattern_scores(attention, config.half_length)  # [S, L, H] each
    first = losses[:, where["first"]].mean(-1)
    repeat = losses[:, where["repeat"]].mean(-1)
    icl = first - repeat
    select_prefix = scores["prefix_matching"][selection].mean(0)
    chosen = top_heads(select_prefix, config.num_ablated)
    top = chosen[0]
    heldout_prefix = scores["prefix_matching"][heldout].mean(0)
    heldout_previous = scores["previous_token"][heldout].mean(0)
    sequence_length = tokens.shape[1]
    means = head_sums[selection].sum(0) / (len(selection) * sequence_length)  # [L, H, Dv]
    rng = np.random.default_rng(config.control_seed)
    controls = [layer_matched_heads(rng, chosen, num_layers, num_heads)
                for _ in range(config.control_draws)]

    base = losses[heldout]
    base_repeat = repeat[heldout]
    per_sequence = {"first_loss": first.tolist(), "repeat_loss": repeat.tolist(),
                    "icl_score": icl.tolist(),
                    "top_head_prefix_matching": scores["prefix_matching"][
                        heldout][:, top[0], top[1]].tolist()}
    metrics = {"icl_score": stats.item_summary(icl),
               "first_loss": stats.item_summary(first),
               "repeat_loss": stats.item_summary(repeat),
               "top_head_prefix_matching": stats.item_summary(
                   per_sequence["top_head_prefix_matching"])}
    per_position = {"base": base.mean(0).tolist()}
    for mode in config.ablation_modes:
        fill = means if mode == "mean" else zeros
        targeted = run(heldout, keep_mask(chosen, num_layers, num_heads), fill)[0]
        control = np.stack([run(heldout, keep_mask(c, num_layers, num_heads), fill)[0]
                            for c in controls])  # [draws, S_heldout, 2N]
        rise = targeted[:, where["repeat"]].mean(-1) - base_repeat
        rise_control = control[..., where["repeat"]].mean(-1).mean(0) - base_repeat
        gain = icl[heldout]
        without = targeted[:, where["first"]].mean(-1) - targeted[:, where["repeat"]].mean(-1)
        per_sequence.update({f"rise_induction_{mode}": rise.tolist(),
                             f"rise_control_{mode}": rise_control.tolist()})
        metrics.update({
            f"rise_induction_{mode}": stats.item_summary(rise),
            f"rise_control_{mode}": stats.item_summary(rise_control),
            f"rise_induction_minus_control_{mode}": paired_summary(rise, rise_control),
            f"removed_fraction_{mode}": removed_fraction(gain, without),
            f"icl_score_without_induction_{mode}": stats.item_summary(without),
        })
        per_position[f"induction_{mode}"] = targeted.mean(0).tolist()
        per_position[f"control_{mode}"] = control.mean((0, 1)).tolist()
    mode = config.ablation_modes[0]
    for key in ("rise_induction", "rise_control", "rise_induction_minus_control",
                "removed_fraction"):
        metrics[key] = metrics[f"{key}_{mode}"]
    for i, row in enumerate(tokens):
        record = {"sequence": i, "split": "selection" if i < num_selection else "heldout",
                  "first_loss": float(first[i]), "repeat_loss": float(repeat[i]),
                  "icl_score": float(icl[i]), "tokens": row.tolist()}
        if i >= num_selection:
            j = i - num_selection
            record.update({k: v[j] for k, v in per_sequence.items()
                           if k.startswith(("rise_", "top_head"))})
        run_dir.log(record)
    previous_top = top_heads(scores["previous_token"][selection].mean(0), config.num_ablated)
    return {
        "model": str(model.path), "sequences": len(tokens), "selection": len(selection),
        "heldout": len(heldout), "half_length": config.half_length,
        "token_pool": {"range": list(config.token_range), "size": int(pool.size)},
        "example": model.decode(tokens[0][1:config.half_length + 1].tolist()),
        "num_layers": num_layers, "num_heads": num_heads,
        "prefix_matching_heldout": heldout_prefix.tolist(),
        "previous_token_heldout": heldout_previous.tolist(),
        "prefix_matching_selection": select_prefix.tolist(),
        "induction_heads": [{"layer": a, "head": h, "selection": float(select_prefix[a, h]),
                             "heldout": float(heldout_prefix[a, h])} for a, h in chosen],
        "heads_above_threshold_heldout": int((heldout_prefix > config.prefix_threshold).sum()),
        "previous_token_heads": [{"layer": a, "head": h,
                                  "heldout": float(heldout_previous[a, h])}
                                 for a, h in previous_top],
        "control_heads": [[list(c) for c in draw] for draw in controls],
        "per_position": per_position, "per_sequence": per_sequence, "metrics": metrics,
    }


# --------------------------------------------------------------------------- verdict


def _above(metric: dict, bar: float) -> str:
    """Holds if the interval's lower end is above ``bar``, does not hold otherwise."""
    return "claim holds" if metric["ci95"][0] > bar else "claim does not hold here"


def parts(numbers: dict, config) -> dict[str, str]:
    m = numbers["metrics"]
    return {
        "in_context": _above(m["icl_score"], config.icl_threshold),
        "induction_head": _above(m["top_head_prefix_matching"], config.prefix_threshold),
        "targeted_beats_random": _above(m["rise_induction_minus_control"], 0.0),
        "removes_gain": _above(m["removed_fraction"], config.removed_fraction),
    }


def verdict(numbers: dict, config) -> dict:
    """``{"verdict", "measured"}``: a pure function of the numbers and the thresholds."""
    p = parts(numbers, config)
    cls = experiment.combine_verdicts(p)
    m = numbers["metrics"]
    fmt = stats.format_summary
    mode, k = config.ablation_modes[0], config.num_ablated
    top = numbers["induction_heads"][0]
    layers = sorted({h["layer"] for h in numbers["induction_heads"]})
    prev_layers = sorted({h["layer"] for h in numbers["previous_token_heads"]})
    others = "; ".join(
        f"{other}-ablation: rise {fmt(m[f'rise_induction_{other}'], '.2f')} vs control "
        f"{fmt(m[f'rise_control_{other}'], '.2f')} nats"
        for other in config.ablation_modes[1:])
    measured = (
        f"SmolLM2-135M-Instruct, {numbers['sequences']} sequences of N={numbers['half_length']} "
        f"random word tokens repeated once [95% interval over sequences]: loss "
        f"{fmt(m['first_loss'], '.2f')} nats on the first copy, {fmt(m['repeat_loss'], '.2f')} "
        f"on the repeat (in-context score {fmt(m['icl_score'], '.2f')}); the top selection "
        f"head, layer {top['layer']} head {top['head']}, has held-out prefix-matching "
        f"{fmt(m['top_head_prefix_matching'], '.2f')}, and "
        f"{numbers['heads_above_threshold_heldout']} of "
        f"{numbers['num_layers'] * numbers['num_heads']} heads score > "
        f"{config.prefix_threshold} held out; the top {k} sit in layers "
        f"{', '.join(map(str, layers))}, the top {k} previous-token heads in layers "
        f"{', '.join(map(str, prev_layers))}. {mode.capitalize()}-ablating the top {k} on the "
        f"{numbers['heldout']} held-out sequences raises the repeat loss by "
        f"{fmt(m['rise_induction'], '.2f')} nats ({fmt(m['removed_fraction'], '.2f')} of the "
        f"in-context gain; an in-context score of "
        f"{fmt(m[f'icl_score_without_induction_{mode}'], '.2f')} nats survives it), {k} "
        f"layer-matched random "
        f"heads by {fmt(m['rise_control'], '.2f')}" + (f"; {others}" if others else ""))
    reasons = (
        f"in-context score {fmt(m['icl_score'], '.2f')} nats vs {config.icl_threshold} "
        f"({p['in_context']}); top head's held-out prefix-matching "
        f"{fmt(m['top_head_prefix_matching'], '.2f')} vs {config.prefix_threshold} "
        f"({p['induction_head']}); rise(induction) - rise(random) "
        f"{fmt(m['rise_induction_minus_control'], '+.2f')} nats vs 0 "
        f"({p['targeted_beats_random']}); fraction of the gain removed "
        f"{fmt(m['removed_fraction'], '.2f')} vs {config.removed_fraction} "
        f"({p['removes_gain']}) (intervals over sequences; no seeds, a pretrained model)")
    return {"verdict": f"{cls}: {reasons}", "measured": measured}


OLSSON = published_figures.OLSSON_2022  # quoted from the paper's text
PUBLISHED_NOTE = (
    "Olsson et al. 2022 (transformer-circuits.pub, arXiv 2209.11895), Argument 1 and the "
    "abstract, read from the paper's text. Their in-context score is the loss at token 500 "
    "minus token 50 of natural text; ours is first-copy minus repeat loss on random tokens, "
    "a much easier context to exploit, so only the sign and the existence of the heads are "
    "comparable. Their ablations are in small attention-only models; SmolLM2 has MLPs, where "
    "they give only correlational evidence.")


def published(numbers: dict, config) -> list[dict]:
    m = numbers["metrics"]
    top = numbers["induction_heads"][0]
    setting = (f"theirs: models trained by the authors on natural text; ours: "
               f"SmolLM2-135M-Instruct (30 layers, MLPs) on {numbers['sequences']} "
               f"[prefix, x, x] sequences, N={numbers['half_length']} random word tokens")
    return [
        {"source": "Olsson et al. 2022, Argument 1", "quote": OLSSON["after"],
         "metric": "in-context learning score after the phase change (nats)", "value": 0.4,
         "ours": f"{m['icl_score']['mean']:.2f} nats (first copy minus repeat)",
         "setting": setting},
        {"source": "Olsson et al. 2022, Argument 1", "quote": OLSSON["one_layer"],
         "metric": "induction heads form in every model but the one-layer one",
         "value": "induction heads present",
         "ours": f"top head layer {top['layer']} head {top['head']}, held-out prefix-matching "
                 f"{m['top_head_prefix_matching']['mean']:.2f}; "
                 f"{numbers['heads_above_threshold_heldout']} heads > {config.prefix_threshold}",
         "setting": setting},
        {"source": "Olsson et al. 2022, abstract", "quote": OLSSON["causal"],
         "metric": "ablating induction heads removes in-context learning",
         "value": "causal in small attention-only models only",
         "ours": f"{config.ablation_modes[0]}-ablating {config.num_ablated} heads removes "
                 f"{m['removed_fraction']['mean']:.0%} of the gain (random heads: "
                 f"{m['rise_control']['mean']:.2f} nats rise)",
         "setting": setting},
    ]


# --------------------------------------------------------------------------- figures


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> list[str]:
    n, mode = numbers["half_length"], config.ablation_modes[0]
    names = []

    figure = Figure(figsize=(8, 3.8))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    target = np.arange(1, 2 * n + 1)  # loss p predicts token p + 1
    curves = numbers["per_position"]
    ax.plot(target, curves["base"], label="model", color="k")
    ax.plot(target, curves[f"induction_{mode}"],
            label=f"top {config.num_ablated} induction heads {mode}-ablated", color="C3")
    ax.plot(target, curves[f"control_{mode}"],
            label=f"{config.num_ablated} layer-matched random heads {mode}-ablated", color="C0")
    ax.axvline(n + 1, color="grey", ls=":", lw=1)
    ax.set(xlabel="position of the predicted token (repeat starts at the dotted line)",
           ylabel="next-token loss (nats)",
           title=f"loss per position, {numbers['heldout']} held-out sequences [prefix, x, x]")
    ax.legend(fontsize=8)
    figure.tight_layout()
    path = run_dir.figure_path("lm_induction_loss")
    figure.savefig(path, dpi=100)
    names.append(path.name)

    figure = Figure(figsize=(8, 7))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    chosen = [(h["layer"], h["head"]) for h in numbers["induction_heads"]]
    for ax, key, title in ((axes[0], "prefix_matching_heldout", "prefix-matching"),
                           (axes[1], "previous_token_heldout", "previous-token")):
        values = np.array(numbers[key])
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        if key.startswith("prefix"):
            for layer, head in chosen:
                ax.add_patch(_box(head, layer))
        ax.set(xlabel="head", ylabel="layer", title=f"{title} (held out)",
               xticks=range(values.shape[1]), yticks=range(0, values.shape[0], 2))
        figure.colorbar(image, ax=ax, fraction=0.05)
    figure.suptitle(f"boxes: the top {config.num_ablated} heads chosen on the selection half")
    figure.tight_layout()
    path = run_dir.figure_path("lm_induction_heads")
    figure.savefig(path, dpi=100)
    names.append(path.name)

    figure = Figure(figsize=(6, 3.8))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    m = numbers["metrics"]
    width = 0.38
    for i, (arm, label) in enumerate((("induction", f"top {config.num_ablated} induction heads"),
                                      ("control", "layer-matched random heads"))):
        records = [m[f"rise_{arm}_{mo}"] for mo in config.ablation_modes]
        means = np.array([r["mean"] for r in records])
        errors = np.abs(np.array([r["ci95"] for r in records]).T - means)
        ax.bar(np.arange(len(records)) + (i - 0.5) * width, means, width, yerr=errors,
               capsize=3, label=label)
    gain = float(np.mean(numbers["per_sequence"]["icl_score"][numbers["selection"]:]))
    ax.axhline(gain, color="grey", ls="--", lw=1, label="the whole in-context gain")
    ax.set(xticks=range(len(config.ablation_modes)), ylim=(min(0.0, ax.get_ylim()[0]),
                                                          1.35 * max(gain, ax.get_ylim()[1])),
           xticklabels=[f"{mo}-ablation" for mo in config.ablation_modes],
           ylabel="rise of the repeat loss (nats)",
           title="ablation on held-out sequences (95% interval over sequences)")
    ax.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    path = run_dir.figure_path("lm_induction_ablation")
    figure.savefig(path, dpi=100)
    names.append(path.name)
    return names


def _box(x: int, y: int):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5)


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    return {**numbers, "claim": CLAIM, "rule": rule(config), **verdict(numbers, config),
            "seeds": [], "headline": HEADLINE, "published": published(numbers, config),
            "published_note": PUBLISHED_NOTE, "figures": plot(numbers, config, run_dir)}


if __name__ == "__main__":
    experiment.main(NAME, run)
