"""A tiny experiment trained with ``attnjax.train.train`` (2 seeds vmapped, checkpoints every
5 steps), killed and resumed by test_train.py. It is its own config file:

    python -m tests.resume_job --config tests/resume_job.py --workdir DIR
        [--config.num_steps=40] [--config.step_delay=0.05]

Writes DIR/final.npz (every member's flattened parameters) when it finishes, and prints each
logged step so the test knows when to kill it.
"""

import sys
import time

import jax
import ml_collections
import numpy as np

from attnjax import experiment, nn, train

CLAIM = "a killed run resumes to the parameters of an uninterrupted one"


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1)
    c.step_delay = 0.0
    c.train = ml_collections.ConfigDict({
        "num_steps": 40, "batch_size": 32, "learning_rate": 1e-3, "warmup_steps": 5,
        "schedule": "cosine", "weight_decay": 0.0, "clip_norm": 1.0, "log_every": 5,
        "checkpoint_every": 5})
    return c


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


def run(config, run_dir):
    arrays = copy_task()
    cfg = nn.TransformerConfig(vocab_size=10, model_dim=16, num_heads=2, num_layers=1,
                               mlp_dim=32, max_len=8, dropout_rate=0.1)
    model = nn.EncoderDecoder(cfg)

    def batches(rngs, step):
        time.sleep(config.step_delay)  # slows the run so the test can kill it mid-way
        idx = train.epoch_batch_indices(256, config.train.batch_size, step,
                                        seed=rngs.int("data_order"))
        return {k: v[idx] for k, v in arrays.items()}

    result = train.train(
        name="copy", seeds=config.seeds, config=config.train, run_dir=run_dir,
        init=lambda key: model.init(key, arrays["source"][:1], arrays["target_in"][:1])["params"],
        loss_fn=train.seq2seq_loss_fn(model), batches=batches, vmap_seeds=True, progress=False,
        log=lambda r: print(r["step"], flush=True) if r.get("seed") == 0 else None,
    )
    leaves = [x for p in result.params for x in jax.tree.leaves(p)]
    np.savez(run_dir.path / "final.npz", *leaves)
    losses = [r["final"]["loss"] if "final" in r else r["loss"] for r in result.final]
    return {"claim": CLAIM, "rule": "none: a test fixture", "measured": f"losses {losses}",
            "verdict": "claim holds: fixture", "seeds": list(config.seeds),
            "metrics": {"loss": {"per_seed": losses, "mean": float(np.mean(losses)),
                                 "ci95": [min(losses), max(losses)]}}}


if __name__ == "__main__":
    experiment.main("resume_job", run, sys.argv[1:])
