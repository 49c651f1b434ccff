"""Does in-context learning show up as patterns in the attention weights? (induction heads)

A 2-layer attention-only transformer (``mlp_dim=0``) learns next-token prediction on
repeated random sequences ``[BOS, x_1..x_n, x_1..x_n]`` (``attnjax.data.induction``). The
first half cannot be predicted; the second half can, but only by looking back: find the
earlier occurrence of the current token and copy the token after it. Olsson et al. (2022)
found that this is done by *induction heads* (a layer-1 head whose query at ``x_i`` attends
to the token after the previous ``x_i``, fed by a layer-0 previous-token head), and that
they form at the same moment in training as the in-context loss drop.

Measured every ``eval_every`` steps on a fixed held-out batch:

* in-context learning score: mean loss on the first half minus mean loss on the second half
  (nats; 0 = the context does not help);
* per head: prefix-matching score (mean attention from a second-half token to the token
  that followed its previous occurrence: the induction pattern) and previous-token score;
* at the end, causal evidence: zero-ablate the top induction head (``analysis.ablate_heads``)
  and the top previous-token head and measure the second-half loss again.

    python -m experiments.induction [--config configs/induction.py[:smoke]]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnjax import analysis, experiment, nn, parallel, train
from attnjax.data import induction
from experiments import REGISTRY

NAME = "induction"
CLAIM = REGISTRY[NAME].claim


def build_model(config) -> nn.DecoderOnlyLM:
    m = config.model
    cfg = nn.TransformerConfig(
        vocab_size=config.vocab_size, model_dim=m.model_dim, num_heads=m.num_heads,
        num_layers=m.num_layers, mlp_dim=0, max_len=2 * config.half_length + 1,
        dropout_rate=0.0, position=m.position, pre_ln=True, tie_embeddings=True,
    )
    return nn.DecoderOnlyLM(cfg)


def next_token_losses(logits, tokens):
    """``[B, T - 1]`` losses of ``logits [B, T - 1, V]`` (for ``tokens[:, :-1]``) at
    predicting ``tokens[:, 1:]``."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def token_losses(model, params, tokens):
    """``[B, T - 1]`` next-token losses of ``tokens [B, T]``."""
    return next_token_losses(model.apply({"params": params}, tokens[:, :-1]), tokens)


def lm_loss_fn(model):
    def loss_fn(params, batch, _key):
        losses = token_losses(model, params, batch["tokens"])
        return losses.mean(), {"loss_sum": losses.sum(), "weight_sum": jnp.asarray(losses.size,
                                                                                  jnp.float32)}
    return loss_fn


def halves(losses: np.ndarray, n: int) -> tuple[float, float]:
    """Mean loss predicting the first-half tokens x_2..x_n and the second-half ones.

    Position p of ``losses`` predicts token p + 1 of ``[BOS, x_1..x_n, x_1..x_n]``: the first
    half's x_2..x_n are positions 1..n-1 (x_1 after BOS is left out), the second half's
    x_1..x_n positions n..2n-1; the second half's first token is predictable only from the
    whole first half, so it is excluded too.
    """
    return float(losses[:, 1:n].mean()), float(losses[:, n + 1 : 2 * n].mean())


def head_pattern_scores(weights: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """``weights [L, B, H, T, T]`` over inputs ``[BOS, x, x]`` (T = 2n) -> ``[L, H]`` scores.

    prefix_matching: query at second-half position ``q`` (token ``x_j``, ``q = n + j``)
    attending to ``q - n + 1`` (the token after ``x_j``'s first occurrence);
    previous_token: attention from ``q`` to ``q - 1`` over all positions ``q >= 1``.
    """
    t = weights.shape[-1]
    queries = np.arange(n + 1, t)  # second-half queries whose target position exists
    prefix = weights[..., queries, queries - n + 1].mean(axis=(1, 3))
    rows = np.arange(1, t)
    previous = weights[..., rows, rows - 1].mean(axis=(1, 3))
    return {"prefix_matching": prefix, "previous_token": previous}


def run(config: ml_collections.ConfigDict, run_dir: experiment.RunDir) -> dict:
    n = config.half_length
    model = build_model(config)
    eval_tokens = jnp.asarray(induction.repeated_sequences(
        np.random.default_rng([config.seed, 10**9]), config.eval_batch_size, n,
        config.vocab_size))
    params = model.init(jax.random.key(config.seed), eval_tokens[:, :-1])["params"]
    tc = config.train
    optimizer = train.make_optimizer(tc.learning_rate, warmup_steps=tc.warmup_steps,
                                     total_steps=tc.num_steps, weight_decay=tc.weight_decay)
    state, step = parallel.train_step_for(config.parallel, lm_loss_fn(model), optimizer,
                                          train.TrainState.create(params, optimizer))

    @jax.jit
    def measure(params):
        _, maps = analysis.capture_attention(model, {"params": params}, eval_tokens[:, :-1])
        return token_losses(model, params, eval_tokens), maps

    def evaluate(state) -> dict:
        losses, maps = jax.device_get(measure(state.params))
        first, second = halves(losses, n)
        scores = head_pattern_scores(analysis.stack_layers(maps, "self_attention"), n)
        return {"loss_first_half": first, "loss_second_half": second,
                "icl_score": first - second,
                **{k: v.tolist() for k, v in scores.items()}}

    state, records = train.fit(
        state, step, functools.partial(
            induction.batch_at, seed=config.seed, batch_size=tc.batch_size, half_length=n,
            vocab_size=config.vocab_size),
        num_steps=tc.num_steps, base_key=jax.random.key(config.seed), log=run_dir.log,
        log_every=tc.log_every, evaluate=evaluate, eval_every=config.eval_every,
        checkpointer=train.Checkpointer(run_dir.path / "checkpoints",
                                        every=tc.checkpoint_every),
        description=NAME,
    )
    history = [r for r in _eval_history(run_dir) if r["split"] == "eval"]
    final = history[-1]
    prefix = np.asarray(final["prefix_matching"])
    previous = np.asarray(final["previous_token"])
    ablation = ablate_top_heads(model, state.params, eval_tokens, prefix, previous, n,
                                config.induction_threshold)
    results = {
        "final": final, "ablation": ablation,
        "timeline": timeline(history, config),
        "chance_loss": float(np.log(config.vocab_size - induction.FIRST_TOKEN_ID)),
        "figures": [plot(history, final, config, run_dir)],
    }
    results.update(verdict_of(results, config))
    return results


def _eval_history(run_dir: experiment.RunDir) -> list[dict]:
    """Every eval record of this run folder, also those written before a resume."""
    import json

    records = [json.loads(line) for line in run_dir.metrics_path.read_text().splitlines()]
    by_step = {r["step"]: r for r in records if r.get("split") == "eval"}
    return [by_step[s] for s in sorted(by_step)]


def ablate_top_heads(model, params, tokens, prefix, previous, n, threshold) -> dict:
    """Second-half loss of the intact model and with heads zero-ablated: the top induction
    head (layer >= 1), every induction head (prefix-matching >= ``threshold``), the top
    previous-token head of layer 0, and all of layer 0."""
    def second_half(heads):
        logits = analysis.ablate_heads(model, {"params": params}, tokens[:, :-1], heads=heads)
        return halves(np.asarray(next_token_losses(logits, tokens)), n)[1]

    path = "decoder/layer_{}/self_attention".format
    later = prefix[1:]
    layer, head = np.unravel_index(int(np.argmax(later)), later.shape)
    top = (int(layer) + 1, int(head))
    all_induction: dict[str, list[int]] = {}
    for lay, hd in zip(*np.nonzero(later >= threshold), strict=True):
        all_induction.setdefault(path(int(lay) + 1), []).append(int(hd))
    previous_head = (0, int(np.argmax(previous[0])))
    return {
        "intact_second_half_loss": second_half({}),
        "induction_head": list(top),
        "without_induction_head": second_half({path(top[0]): [top[1]]}),
        "induction_heads": all_induction,
        "without_induction_heads": second_half(all_induction) if all_induction else None,
        "previous_token_head": list(previous_head),
        "without_previous_token_head": second_half({path(0): [previous_head[1]]}),
        "without_layer_0": second_half({path(0): list(range(previous.shape[1]))}),
    }


def timeline(history: list[dict], config) -> dict:
    """The first eval step at which an induction head exists (prefix-matching >= threshold in
    a layer >= 1) and at which the in-context score reaches ``appear_fraction`` of its final
    value."""
    final_icl = history[-1]["icl_score"]
    head_step = next((r["step"] for r in history
                      if np.max(np.asarray(r["prefix_matching"])[1:]) >=
                      config.induction_threshold), None)
    icl_step = next((r["step"] for r in history
                     if final_icl > 0 and r["icl_score"] >= config.appear_fraction * final_icl),
                    None)
    together = (head_step is not None and icl_step is not None
                and abs(head_step - icl_step) <= 2 * config.eval_every)
    return {"induction_head_step": head_step, "icl_step": icl_step, "together": together}


def verdict_of(results: dict, config) -> dict:
    final, ablation, when = results["final"], results["ablation"], results["timeline"]
    prefix = np.asarray(final["prefix_matching"])
    previous = np.asarray(final["previous_token"])
    layer, head = ablation["induction_head"]
    intact = ablation["intact_second_half_loss"]
    count = sum(len(h) for h in ablation["induction_heads"].values())
    measured = (
        f"2-layer attention-only transformer, {config.train.num_steps} steps: loss on the first "
        f"half {final['loss_first_half']:.2f} nats (chance {results['chance_loss']:.2f}), on the "
        f"repeated second half {final['loss_second_half']:.2f} (in-context score "
        f"{final['icl_score']:.2f}); top induction head layer {layer} head {head} prefix-"
        f"matching {prefix[layer, head]:.2f}, top previous-token head layer 0 head "
        f"{ablation['previous_token_head'][1]} {previous[0].max():.2f}; induction head from step "
        f"{when['induction_head_step']}, in-context score at {config.appear_fraction:.0%} of "
        f"final from step {when['icl_step']}; second-half loss {intact:.2f} intact, "
        f"{ablation['without_induction_head']:.2f} without the top induction head, "
        + (f"{ablation['without_induction_heads']:.2f} without all {count} induction heads, "
           if count else "")
        + f"{ablation['without_previous_token_head']:.2f} without the top previous-token head, "
        f"{ablation['without_layer_0']:.2f} without layer 0"
    )
    gap = final["loss_first_half"] - intact
    learned = final["icl_score"] > 1.0
    has_head = prefix[1:].max() >= config.induction_threshold
    # Causal: removing the induction heads (all of them: they can back each other up)
    # undoes more than half of what the context bought.
    causal = bool(count) and ablation["without_induction_heads"] - intact > 0.5 * gap
    if learned and has_head and causal and when["together"]:
        verdict = ("claim holds: the model learns in context, layer-1 heads attend to the "
                   "token after the previous occurrence (induction heads), they appear when "
                   "the in-context loss drops, and removing them undoes most of the gain")
    elif learned and (has_head or causal):
        verdict = ("mixed: in-context learning and an induction pattern both appear, but not "
                   "all of: same time, strong pattern, causal effect of the head")
    else:
        verdict = "claim does not hold here: no in-context learning or no induction pattern"
    return {"claim": CLAIM, "measured": measured, "verdict": verdict}


def plot(history: list[dict], final: dict, config, run_dir: experiment.RunDir) -> str:
    steps = [r["step"] for r in history]
    figure = Figure(figsize=(13, 4))
    FigureCanvasAgg(figure)
    left, middle, right = figure.subplots(1, 3)
    left.plot(steps, [r["loss_first_half"] for r in history], label="first half (random)")
    left.plot(steps, [r["loss_second_half"] for r in history], label="second half (repeat)")
    left.set(xlabel="training step", ylabel="next-token loss (nats)",
             title="in-context learning")
    left.legend()
    prefix = np.array([r["prefix_matching"] for r in history])  # [steps, L, H]
    previous = np.array([r["previous_token"] for r in history])
    for h in range(prefix.shape[2]):
        middle.plot(steps, prefix[:, -1, h], label=f"L{prefix.shape[1] - 1} H{h} prefix-match")
        middle.plot(steps, previous[:, 0, h], ":", label=f"L0 H{h} previous-token")
    icl = np.array([r["icl_score"] for r in history])
    middle2 = middle.twinx()
    middle2.plot(steps, icl, "k-", lw=2, label="in-context score")
    middle2.set_ylabel("in-context score (nats)")
    middle.set(xlabel="training step", ylabel="attention score", ylim=(0, 1.05),
               title="heads form as the in-context loss drops")
    middle.legend(fontsize=6, loc="center right")
    scores = np.concatenate([np.asarray(final["previous_token"]),
                             np.asarray(final["prefix_matching"])])
    image = right.imshow(scores, vmin=0, vmax=1, cmap="viridis")
    layers = len(final["prefix_matching"])
    right.set(yticks=range(2 * layers), xlabel="head",
              yticklabels=[f"L{i} prev-token" for i in range(layers)]
              + [f"L{i} prefix-match" for i in range(layers)], title="final head scores")
    figure.colorbar(image, ax=right, fraction=0.04)
    figure.tight_layout()
    path = run_dir.figure_path("induction")
    figure.savefig(path, dpi=100)
    return path.name


if __name__ == "__main__":
    experiment.main(NAME, run)
