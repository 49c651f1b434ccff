"""Does in-context learning show up as patterns in the attention weights? (induction heads)

A 2-layer attention-only transformer (``mlp_dim=0``) learns next-token prediction on
repeated random sequences ``[BOS, x_1..x_n, x_1..x_n, ..]`` (x tiled) with the period ``n``
drawn per example (``attnjax.data.induction``). The first copy cannot be predicted; the
repeats can, but only by looking back: find the earlier occurrence of the current token and
copy the token after it (a varying period leaves no positional shortcut). Olsson et al.
(2022) found that this is done by *induction heads* (a layer-1 head whose query at ``x_i``
attends to the token after the previous ``x_i``, fed by a layer-0 previous-token head),
that they form at the same moment in training as the in-context loss drop, and that a
1-layer attention-only model, which cannot compose heads, forms none and learns much less
in context.

Both models (2 layers and the 1-layer control: same width, data, optimiser and steps) train
with ``attnjax.train.train``, their seeds vmapped. Every ``eval_every`` steps, on a fixed
dev batch, each seed records (``metrics.jsonl``, split ``eval``):

* the in-context score: mean loss on the first copy minus mean loss on the repeats (nats;
  0 = the context does not help; Olsson et al. use loss at token 500 minus token 50);
* per head: prefix-matching score (mean attention from a repeated token to the token that
  followed its previous occurrence: the induction pattern) and previous-token score.

At the end, per seed: induction heads are chosen on dev (layer >= 1, prefix-matching >=
``induction_threshold``) and zero-ablated (``analysis.ablate_heads``) on a separate test
batch, beside the same number of the other layer >= 1 heads (a size-matched control), the
top previous-token head and all of layer 0. An order-blind ceiling (the best predictor that
knows which tokens are still to come but not their order,
``induction.order_blind_loss``) says how much in-context gain needs the order at all.

    python -m experiments.induction [--config configs/induction.py[:tour|:smoke]]
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, stats, train
from attnjax.data import induction
from attnjax.data import published as published_figures
from attnjax.nn.attention_only import attention_only_lm
from attnjax.parallel.check import next_token_loss_fn
from experiments import REGISTRY

NAME = "induction"
CLAIM = REGISTRY[NAME].claim
RULE = (
    "per seed, all of: (1) an induction head forms: a layer >= 1 head of the "
    "{layers}-layer attention-only model has dev prefix-matching score >= "
    "{induction_threshold}; (2) it learns in context: test in-context score (loss on the "
    "first copy minus the second) >= the order-blind ceiling (the score of the best "
    "predictor that knows which tokens are still to come but not their order) + "
    "{icl_margin} nats; (3) causally: zero-ablating those "
    "heads (chosen on dev) gives back >= {ablation_margin:.0%} of that gain on test; (4) the "
    "{control_layers}-layer control (same width, data, optimiser, steps) stays below "
    "that bar. Holds if all four pass in >= {holds_at:.0%} of seeds, does not hold if "
    "in <= {fails_at:.0%}, mixed otherwise."
)
HEADLINE = ["icl_score", "control_icl_score", "ablation_recovered_fraction"]


def rule(config: ml_collections.ConfigDict) -> str:
    return RULE.format(layers=config.model.num_layers, control_layers=config.control_layers,
                       induction_threshold=config.induction_threshold, icl_margin=config.icl_margin,
                       ablation_margin=config.ablation_margin,
                       holds_at=config.verdict.holds_at, fails_at=config.verdict.fails_at)


def token_losses(model, params, tokens: jax.Array) -> jax.Array:
    """``[B, T - 1]`` next-token losses of ``tokens [B, T]``."""
    logits = model.apply({"params": params}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                          tokens[:, 1:])


def copy_losses(losses: np.ndarray, period: np.ndarray, half_length: int) -> tuple[float, float]:
    """Mean loss predicting the first copy's ``x_2..x_n`` and the second copy's."""
    masks = induction.copy_targets(period, half_length)
    return float(losses[masks["first"]].mean()), float(losses[masks["second"]].mean())


def head_pattern_scores(weights: np.ndarray, period) -> dict[str, np.ndarray]:
    """``weights [L, B, H, T, T]`` over inputs ``tokens[:, :-1]`` (T = 2 N) -> ``[L, H]``.

    prefix_matching: mean attention from a second-copy query (token ``x_j``) to the token
    that followed ``x_j``'s first occurrence (``copy_targets(...)["prefix_key"]``);
    previous_token: attention from ``q`` to ``q - 1`` over all positions ``q >= 1``.
    ``period`` is ``[B]`` (or one int for every example).
    """
    w = np.asarray(weights)
    t = w.shape[-1]
    period = np.broadcast_to(np.asarray(period), (w.shape[1],))
    key = induction.copy_targets(period, t // 2)["prefix_key"]  # [B, T]
    b, q = np.nonzero(key >= 0)
    prefix = w[:, b, :, q, key[b, q]].mean(axis=0)  # advanced indices first: [M, L, H]
    rows = np.arange(1, t)
    previous = w[..., rows, rows - 1].mean(axis=(1, 3))
    return {"prefix_matching": prefix, "previous_token": previous}


def _eval_batch(config, split: int) -> dict[str, np.ndarray]:
    """The dev (0) or test (1) batch: fixed across seeds, disjoint from training draws."""
    return induction.repeated_sequences(
        np.random.default_rng([config.eval_seed, split]), config.eval_batch_size,
        config.half_length, config.vocab_size, config.min_half_length)


def _first_step(history: list[dict], test) -> int | None:
    return next((r["step"] for r in history if test(r)), None)


def _train_arm(config, run_dir, layers: int, dev: dict, test: dict) -> dict:
    """Trains the ``layers``-layer model over the seeds; per-seed numbers (lists)."""
    n = config.half_length
    model = attention_only_lm(config.model, vocab_size=config.vocab_size, max_len=2 * n + 1,
                              num_layers=layers)
    dev_tokens, test_tokens = jnp.asarray(dev["tokens"]), jnp.asarray(test["tokens"])

    @jax.jit
    def losses_and_maps(params, tokens):
        _, maps = analysis.capture_attention(model, {"params": params}, tokens[:, :-1])
        return token_losses(model, params, tokens), maps

    def evaluate(params, member) -> dict:
        del member  # every seed is scored on the same dev batch
        losses, maps = jax.device_get(losses_and_maps(params, dev_tokens))
        first, second = copy_losses(losses, dev["period"], n)
        scores = head_pattern_scores(analysis.stack_layers(maps, "self_attention"),
                                     dev["period"])
        return {"loss_first_copy": first, "loss_second_copy": second,
                "icl_score": first - second, **{k: v.tolist() for k, v in scores.items()}}

    tc = config.train
    result = train.train(
        name=f"{layers}-layer", seeds=config.seeds, config=tc,
        init=lambda key: model.init(key, dev_tokens[:1, :-1])["params"],
        loss_fn=next_token_loss_fn(model),
        batches=lambda rngs, step: induction.batch_at(
            step, seed=rngs.int("data_draw"), batch_size=tc.batch_size, half_length=n,
            vocab_size=config.vocab_size, min_half_length=config.min_half_length),
        run_dir=run_dir, parallel=config.parallel, vmap_seeds=config.vmap_seeds,
        evaluate=evaluate, eval_every=config.eval_every,
        tokens_in=lambda batch: int(batch["tokens"].size),
    )
    print(f"{NAME}: {layers}-layer model, {result.num_params:,} parameters, "
          f"{len(result.seeds)} seeds in {result.seconds:.0f} s (vmapped: {result.vmapped})")
    path = "decoder/layer_{}/self_attention".format
    test_losses = jax.jit(lambda params: token_losses(model, params, test_tokens))

    def second_copy(params, heads) -> float:
        logits = analysis.ablate_heads(model, {"params": params}, test_tokens[:, :-1],
                                       heads=heads)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), test_tokens[:, 1:])
        return copy_losses(np.asarray(losses), test["period"], n)[1]

    out: dict[str, list] = {}
    for seed, params in zip(result.seeds, result.params, strict=True):
        history = result.history(seed, split="eval")
        prefix = np.asarray(history[-1]["prefix_matching"])  # [L, H], dev
        previous = np.asarray(history[-1]["previous_token"])
        first, second = copy_losses(np.asarray(test_losses(params)), test["period"], n)
        later = prefix[1:]  # induction heads sit above layer 0
        chosen = [(int(a) + 1, int(h)) for a, h in zip(*np.nonzero(
            later >= config.induction_threshold), strict=True)]
        others = sorted((float(later[a, h]), a + 1, h) for a in range(later.shape[0])
                        for h in range(later.shape[1]) if (a + 1, h) not in chosen)
        matched = [(a, h) for _, a, h in others[:len(chosen)]] \
            if chosen and len(others) >= len(chosen) else []

        def heads(pairs):
            grouped: dict[str, list[int]] = {}
            for a, h in pairs:
                grouped.setdefault(path(a), []).append(h)
            return grouped

        gain = first - second
        without = second_copy(params, heads(chosen)) if chosen else second
        numbers = {
            "icl_score": gain, "loss_first_copy": first, "loss_second_copy": second,
            "max_prefix_matching": float(later.max() if later.size else prefix.max()),
            "max_previous_token": float(previous[0].max()),
            "induction_heads": [list(p) for p in chosen],
            "without_induction_heads": without,
            "ablation_recovered_fraction": (without - second) / gain if chosen and gain > 0
            else 0.0,
            "without_matched_heads": second_copy(params, heads(matched)) if matched else None,
            "without_previous_token_head": second_copy(
                params, {path(0): [int(np.argmax(previous[0]))]}) if layers > 1 else None,
            "without_layer_0": second_copy(params, {path(0): list(range(previous.shape[1]))})
            if layers > 1 else None,
        }
        final_icl = history[-1]["icl_score"]
        head_step = _first_step(history, lambda r: layers > 1 and np.max(
            np.asarray(r["prefix_matching"])[1:]) >= config.induction_threshold)
        icl_step = _first_step(history, lambda r, final=final_icl: final > 0
                               and r["icl_score"] >= config.appear_fraction * final)
        numbers.update({
            "induction_head_step": head_step, "icl_step": icl_step,
            "together": head_step is not None and icl_step is not None
            and abs(head_step - icl_step) <= 2 * config.eval_every,
            "curve": {"step": [r["step"] for r in history],
                      "icl_score": [r["icl_score"] for r in history],
                      "prefix_matching": [float(np.max(np.asarray(r["prefix_matching"])[-1]))
                                          for r in history],
                      "previous_token": [float(np.max(np.asarray(r["previous_token"])[0]))
                                         for r in history]},
        })
        for key, value in numbers.items():
            out.setdefault(key, []).append(value)
    out["num_params"] = result.num_params
    out["train_seconds"] = result.seconds
    return out


def measure(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    """Trains both arms over the seeds; the per-seed numbers the verdict reads."""
    dev, test = _eval_batch(config, 0), _eval_batch(config, 1)
    chance = math.log(config.vocab_size - induction.FIRST_TOKEN_ID)
    return {
        "seeds": [int(s) for s in config.seeds],
        "chance_loss": chance,
        "order_blind_icl_score": chance - induction.order_blind_loss(test["tokens"],
                                                                      test["period"]),
        "main": _train_arm(config, run_dir, config.model.num_layers, dev, test),
        "control": _train_arm(config, run_dir, config.control_layers, dev, test),
    }


def icl_bar(numbers: dict, config) -> float:
    """The in-context score a seed must reach: the order-blind ceiling plus the margin."""
    return numbers["order_blind_icl_score"] + config.icl_margin


def _passes(numbers: dict, config) -> dict[str, list[bool]]:
    main, control = numbers["main"], numbers["control"]
    bar = icl_bar(numbers, config)
    return {
        "induction_head": [v >= config.induction_threshold for v in main["max_prefix_matching"]],
        "icl": [v >= bar for v in main["icl_score"]],
        "causal": [v >= config.ablation_margin for v in main["ablation_recovered_fraction"]],
        "control_below": [v < bar for v in control["icl_score"]],
    }


def metrics(numbers: dict) -> dict:
    main, control = numbers["main"], numbers["control"]
    return {
        "icl_score": stats.summary(main["icl_score"]),
        "control_icl_score": stats.summary(control["icl_score"]),
        "ablation_recovered_fraction": stats.summary(main["ablation_recovered_fraction"]),
        "max_prefix_matching": stats.summary(main["max_prefix_matching"]),
        "control_max_prefix_matching": stats.summary(control["max_prefix_matching"]),
        "second_copy_loss": stats.summary(main["loss_second_copy"]),
        "control_second_copy_loss": stats.summary(control["loss_second_copy"]),
    }


def _steps(steps: list) -> str:
    """``"700 / 900 / never"``: a step per seed."""
    return " / ".join("never" if s is None else str(s) for s in steps)


def verdict(numbers: dict, config: ml_collections.ConfigDict) -> dict:
    """``{"verdict", "measured"}``: a pure function of the numbers and the thresholds."""
    passes = _passes(numbers, config)
    per_seed = [all(p) for p in zip(*passes.values(), strict=True)]
    cls, k_of_n = experiment.seed_verdict(per_seed, holds_at=config.verdict.holds_at,
                                          fails_at=config.verdict.fails_at)
    m = metrics(numbers)
    n = len(per_seed)
    count = {part: sum(p) for part, p in passes.items()}
    fmt = stats.format_summary
    layers, control = config.model.num_layers, config.control_layers
    reasons = (
        f"holds in {k_of_n}: an induction head (dev prefix-matching >= "
        f"{config.induction_threshold}) in {count['induction_head']} of {n}, in-context score "
        f"{fmt(m['icl_score'], '.2f')} nats (>= the bar {icl_bar(numbers, config):.2f} = "
        f"order-blind ceiling {numbers['order_blind_icl_score']:.2f} + {config.icl_margin} in "
        f"{count['icl']} of {n}), "
        f"ablating the induction heads gives back {fmt(m['ablation_recovered_fraction'], '.2f')}"
        f" of the gain (>= {config.ablation_margin} in {count['causal']} of {n}), the "
        f"{control}-layer control scores {fmt(m['control_icl_score'], '.2f')} nats (below the "
        f"bar in {count['control_below']} of {n})"
    )
    main = numbers["main"]
    measured = (
        f"{layers}-layer attention-only transformer, {config.train.num_steps} steps, "
        f"{n} seeds (test, mean [95% CI]): first-copy loss "
        f"{np.mean(main['loss_first_copy']):.2f} nats (chance {numbers['chance_loss']:.2f}), "
        f"second copy {fmt(m['second_copy_loss'], '.2f')}, in-context score "
        f"{fmt(m['icl_score'], '.2f')} vs {fmt(m['control_icl_score'], '.2f')} for the "
        f"{control}-layer control; top layer-1 prefix-matching "
        f"{fmt(m['max_prefix_matching'], '.2f')} vs {fmt(m['control_max_prefix_matching'], '.2f')}"
        f" for the control's heads; zero-ablating the induction heads gives back "
        f"{fmt(m['ablation_recovered_fraction'], '.2f')} of the in-context gain; an induction "
        f"head from step {_steps(main['induction_head_step'])}, the in-context score at "
        f"{config.appear_fraction:.0%} of its final value from step {_steps(main['icl_step'])}"
        f" (within {2 * config.eval_every} steps of each other in {sum(main['together'])} of "
        f"{n} seeds)."
    )
    return {"verdict": f"{cls}: {reasons}", "measured": measured}


def published(numbers: dict, config) -> list[dict]:
    """What Olsson et al. 2022 measured, beside ours (their text is quoted in
    ``OLSSON``; the settings differ: see ``setting``)."""
    main, control = numbers["main"], numbers["control"]
    tokens_per_step = config.train.batch_size * 2 * config.half_length
    head_tokens = ["never" if s is None else f"{s * tokens_per_step / 1e6:.2f}M"
                   for s in main["induction_head_step"]]
    setting = (f"theirs: language models trained on natural text, score = loss at token 500 "
               f"minus loss at token 50; ours: toy repeated random sequences "
               f"({config.vocab_size - induction.FIRST_TOKEN_ID} token ids, period "
               f"{config.min_half_length}-{config.half_length} drawn per example), "
               f"attention-only models of width {config.model.model_dim} trained for "
               f"{config.train.num_steps} steps, score = first-copy minus second-copy loss "
               "(positive = the context helps)")
    icl, icl_control = np.mean(main["icl_score"]), np.mean(control["icl_score"])
    return [
        {"source": "Olsson et al. 2022, Argument 1", "quote": OLSSON["after"], "metric":
         "in-context learning score after the phase change, models with > 1 layer (nats)",
         "value": 0.4, "ours": f"{icl:.2f} nats ({config.model.num_layers} layers)",
         "setting": setting},
        {"source": "Olsson et al. 2022, Argument 1", "quote": OLSSON["one_layer"], "metric":
         "one-layer models: no induction heads, little in-context learning",
         "value": "no induction heads",
         "ours": f"{icl_control:.2f} nats ({config.control_layers}-layer control)",
         "setting": setting},
        {"source": "Olsson et al. 2022, Argument 1", "quote": OLSSON["window"], "metric":
         "when the induction heads and the in-context jump appear (training tokens)",
         "value": "2.5e9 to 5e9 tokens",
         "ours": f"induction head after {' / '.join(head_tokens)} tokens per seed; head and "
                 f"in-context jump within {2 * config.eval_every} steps in "
                 f"{sum(main['together'])} of {len(numbers['seeds'])} seeds",
         "setting": setting},
    ]


OLSSON = published_figures.OLSSON_2022  # quoted from the paper's text
PUBLISHED_NOTE = (
    "Olsson et al. 2022 (transformer-circuits.pub, arXiv 2209.11895), Argument 1, read from "
    "the paper's text. Their models are language models of natural text (1 to 40 layers, "
    "billions of tokens); ours are small attention-only models on repeated random sequences, "
    "so only the qualitative pattern (1 layer vs 2, the jump) is comparable, not the token "
    "counts.")


def plot(numbers: dict, config, run_dir: experiment.RunDir) -> list[str]:
    figure = Figure(figsize=(13, 4))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    main, control = numbers["main"], numbers["control"]
    layers, control_layers = config.model.num_layers, config.control_layers
    for i in range(len(numbers["seeds"])):
        c, k = main["curve"][i], control["curve"][i]
        left.plot(c["step"], c["icl_score"], "C0-", alpha=0.8,
                  label=f"{layers} layers" if i == 0 else None)
        left.plot(k["step"], k["icl_score"], "C3--", alpha=0.8,
                  label=f"{control_layers} layer (control)" if i == 0 else None)
        middle.plot(c["step"], c["prefix_matching"], "C0-", alpha=0.8,
                    label=f"top layer-{layers - 1} prefix-matching" if i == 0 else None)
        middle.plot(c["step"], c["previous_token"], "C2:", alpha=0.8,
                    label="top layer-0 previous-token" if i == 0 else None)
        middle.plot(k["step"], k["prefix_matching"], "C3--", alpha=0.8,
                    label="control: top prefix-matching" if i == 0 else None)
    left.axhline(icl_bar(numbers, config), color="grey", lw=0.8, ls=":", label="bar")
    left.axhline(numbers["order_blind_icl_score"], color="k", lw=0.8, ls="-.",
                 label="order-blind ceiling")
    left.set(xlabel="training step", ylabel="in-context score (nats, dev)",
             title="in-context learning, per seed")
    left.legend(fontsize=7)
    middle.axhline(config.induction_threshold, color="grey", lw=0.8, ls=":")
    middle.set(xlabel="training step", ylabel="attention score (dev)", ylim=(0, 1.05),
               title="head scores over training")
    middle.legend(fontsize=7)
    bars = {"intact": main["loss_second_copy"],
            "-induction heads": main["without_induction_heads"],
            "-same # other heads": main["without_matched_heads"],
            "-prev-token head": main["without_previous_token_head"],
            "-layer 0": main["without_layer_0"],
            "control": control["loss_second_copy"]}
    for x, (label, values) in enumerate(bars.items()):
        values = [v for v in values if v is not None]
        if values:
            right.bar(x, np.mean(values), color="C3" if label == "control" else "C0", alpha=0.6)
            right.plot([x] * len(values), values, "k.")
    right.axhline(numbers["chance_loss"], color="grey", lw=0.8, ls=":", label="chance")
    right.set_xticks(range(len(bars)), list(bars), rotation=30, ha="right", fontsize=7)
    right.set(ylabel="second-copy loss (nats, test)", title="ablations (dots: seeds)")
    right.legend(fontsize=7)
    figure.tight_layout()
    path = run_dir.figure_path(NAME)
    figure.savefig(path, dpi=100)
    return [path.name]


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    numbers = measure(config, run_dir)
    main = numbers["main"]
    return {
        "claim": CLAIM, "rule": rule(config), **verdict(numbers, config),
        "seeds": numbers["seeds"], "metrics": metrics(numbers), "headline": HEADLINE,
        "published": published(numbers, config),
        "published_note": PUBLISHED_NOTE,
        "timeline": {key: main[key] for key in ("induction_head_step", "icl_step", "together")},
        "ablation": {key: main[key] for key in (
            "loss_second_copy", "without_induction_heads", "without_matched_heads",
            "without_previous_token_head", "without_layer_0", "induction_heads")},
        "passes": _passes(numbers, config),
        "numbers": numbers,
        "figures": plot(numbers, config, run_dir),
    }


if __name__ == "__main__":
    experiment.main(NAME, run)
