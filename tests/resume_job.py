"""A tiny checkpointed training run, killed and resumed by test_train.py.

python -m tests.resume_job WORKDIR NUM_STEPS [STEP_DELAY_SECONDS]
Writes WORKDIR/final.npz (the flattened parameters) when it finishes.
"""

import sys
import time
from pathlib import Path

import jax
import numpy as np

from attnjax import nn, train


def copy_task(num_examples=256, length=6, vocab=10, seed=0):
    rng = np.random.default_rng(seed)
    body = rng.integers(3, vocab, (num_examples, length)).astype(np.int32)
    eos = np.full((num_examples, 1), 2, np.int32)
    bos = np.full((num_examples, 1), 1, np.int32)
    return {
        "source": np.concatenate([body, eos], 1),
        "target_in": np.concatenate([bos, body], 1),
        "target_out": np.concatenate([body, eos], 1),
    }


def main(workdir: str, num_steps: int, delay: float = 0.0) -> None:
    arrays = copy_task()
    cfg = nn.TransformerConfig(vocab_size=10, model_dim=16, num_heads=2, num_layers=1,
                               mlp_dim=32, max_len=8, dropout_rate=0.1)
    model = nn.EncoderDecoder(cfg)
    params = model.init(jax.random.key(0), arrays["source"][:1], arrays["target_in"][:1])
    optimizer = train.make_optimizer(1e-3, warmup_steps=5, total_steps=num_steps)
    state = train.TrainState.create(params["params"], optimizer)
    step = train.make_train_step(train.seq2seq_loss_fn(model), optimizer)

    def batch_at(s):
        time.sleep(delay)  # slows the run so the test can kill it mid-way
        idx = train.epoch_batch_indices(256, 32, s, seed=0)
        return {k: v[idx] for k, v in arrays.items()}

    checkpointer = train.Checkpointer(Path(workdir) / "checkpoints", every=5)
    state, _ = train.fit(state, step, batch_at, num_steps=num_steps, base_key=jax.random.key(1),
                         checkpointer=checkpointer, progress=False, log_every=5,
                         log=lambda r: print(r["step"], flush=True))
    leaves = jax.tree.leaves(jax.device_get(state.params))
    np.savez(Path(workdir) / "final.npz", *leaves)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
