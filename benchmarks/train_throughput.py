"""Training throughput of the attnjax transformer vs the same model on flax.linen attention.

Both models are the toy-translation EncoderDecoder; only the attention module differs:
``attnjax.nn.MultiHeadAttention`` (over ``attnjax.ops.dot_product_attention``) or
``flax.linen.MultiHeadDotProductAttention``. They train on the same batches with the same
optimiser in one process; timing alternates between them in rounds so that a noisy
neighbour on this shared machine slows both alike, and the median round is reported.

    python -m benchmarks.train_throughput [--steps 50] [--rounds 7] [--batch-size 64]

Prints target tokens/s of each, and the ratio attnjax / flax (>= 0.95 is the bar).
"""

from __future__ import annotations

import argparse
import json
import time

import flax.linen as flax_nn
import jax
import numpy as np

from attnjax import bench, nn, train
from attnjax.data.toy_translation import ToyTranslation
from attnjax.data.vocab import Vocab, encode_pairs


class FlaxAttention(flax_nn.Module):
    """flax.linen.MultiHeadDotProductAttention behind attnjax's attention signature."""

    num_heads: int
    num_kv_heads: int | None = None
    dropout_rate: float = 0.0
    normalize_qk: bool = False
    position: str | None = None
    rope_base: float = 10_000.0
    decode: bool = False
    dtype: object = None

    @flax_nn.compact
    def __call__(self, inputs_q, inputs_kv=None, *, mask=None, bias=None, is_causal=False,
                 deterministic=True):
        if self.position is not None or self.num_kv_heads not in (None, self.num_heads):
            raise ValueError("FlaxAttention: flax has no RoPE/ALiBi/GQA; use sinusoidal/learned")
        if is_causal:
            causal = flax_nn.make_causal_mask(jax.numpy.ones(inputs_q.shape[:2]))
            mask = causal if mask is None else flax_nn.combine_masks(mask, causal)
        return flax_nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dropout_rate=self.dropout_rate,
            normalize_qk=self.normalize_qk, decode=self.decode, dtype=self.dtype,
        )(inputs_q, inputs_kv, mask=mask, deterministic=deterministic)


def toy_batches(num_sentences: int, seed: int = 0):
    examples = ToyTranslation(seed).sample(num_sentences)
    pairs = [(e.source, e.target) for e in examples]
    source_vocab = Vocab.build([s for s, _ in pairs])
    target_vocab = Vocab.build([t for _, t in pairs])
    return encode_pairs(pairs, source_vocab, target_vocab), len(source_vocab), len(target_vocab)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model-dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args(argv)

    arrays, source_vocab, target_vocab = toy_batches(4_000)
    n = len(arrays["source"])
    base = nn.TransformerConfig(
        vocab_size=source_vocab, target_vocab_size=target_vocab, model_dim=args.model_dim,
        num_heads=4, num_layers=args.layers, mlp_dim=2 * args.model_dim, dropout_rate=0.1,
        position="sinusoidal",
    )
    contenders = {
        "attnjax": nn.EncoderDecoder(base),
        "flax": nn.EncoderDecoder(base.replace(attention_cls=FlaxAttention)),
    }
    optimizer = train.make_optimizer(1e-3, warmup_steps=10, total_steps=10_000)
    batch_at = lambda s: {k: v[train.epoch_batch_indices(n, args.batch_size, s, 0)]
                          for k, v in arrays.items()}
    states, steps = {}, {}
    for name, model in contenders.items():
        params = model.init(jax.random.key(0), arrays["source"][:2], arrays["target_in"][:2])
        states[name] = train.TrainState.create(params["params"], optimizer)
        steps[name] = train.make_train_step(train.seq2seq_loss_fn(model), optimizer)
        states[name], _ = steps[name](states[name], batch_at(0), jax.random.key(1))  # compile
    # The same parameter shapes (the flax wrapper nests its module one level deeper), so the
    # two really are the same model.
    shapes = {name: sorted(x.shape for x in jax.tree.leaves(state.params))
              for name, state in states.items()}
    assert shapes["attnjax"] == shapes["flax"], "the two models differ in their parameters"

    tokens_per_round = sum(int((batch_at(s)["target_out"] != 0).sum()) for s in range(args.steps))
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    batches = [batch_at(s) for s in range(args.steps)]
    load = bench.NeighbourLoad()  # other processes' CPU use while the rounds ran
    with load:
        _timed_rounds(args.rounds, contenders, states, steps, batches, tokens_per_round, rates)
    ratios = [a / f for a, f in zip(rates["attnjax"], rates["flax"], strict=True)]
    result = {
        "tokens_per_second": {k: float(np.median(v)) for k, v in rates.items()},
        "ratio_attnjax_over_flax_median": float(np.median(ratios)),
        "ratio_attnjax_over_flax": bench.repeat_summary(ratios, "median"),
        "ratio_per_round": [round(r, 4) for r in ratios],
        "neighbour_cores": load.cores,
        "config": vars(args),
        "environment": bench.environment(),
    }
    print(json.dumps(result, indent=2))
    return result


def _timed_rounds(rounds, contenders, states, steps, batches, tokens_per_round, rates) -> None:
    """Alternating rounds of ``len(batches)`` steps per model; appends tokens/s to ``rates``."""
    for _ in range(rounds):
        for name in contenders:
            state = states[name]
            jax.block_until_ready(state)
            tic = time.perf_counter()
            for batch in batches:
                state, _ = steps[name](state, batch, jax.random.key(1))
            jax.block_until_ready(state)
            rates[name].append(tokens_per_round / (time.perf_counter() - tic))
            states[name] = state


if __name__ == "__main__":
    main()
