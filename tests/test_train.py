"""Training loop, checkpoint resume, losses, schedules and decoding."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from attnjax import nn, train
from tests.conftest import REPO_ROOT
from tests.resume_job import copy_task


def run_job(workdir, steps, delay=0.0):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resume_job", "--config", "tests/resume_job.py",
         "--workdir", str(workdir), f"--config.train.num_steps={steps}",
         f"--config.step_delay={delay}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "XLA_FLAGS": ""},
    )


def _interrupt_after(job, step, sig):
    """Sends ``sig`` once the job has logged ``step`` (past a checkpoint every 5 steps)."""
    for line in job.stdout:
        if line.strip().isdigit() and int(line) >= step:
            break
    job.send_signal(sig)
    out, _ = job.communicate(timeout=120)
    return out


def _train_steps(folder):
    """``(seed, step)`` of every training record of ``folder/metrics.jsonl``, sorted."""
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return sorted((r["seed"], r["step"]) for r in records if r.get("split") == "train")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    job = run_job(workdir, 40)
    log, _ = job.communicate(timeout=300)
    assert job.returncode == 0, log
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_to_identical_parameters_and_complete_metrics(
        tmp_path, straight_run, sig):
    out = _interrupt_after(run_job(tmp_path, 40, delay=0.05), 15, sig)
    assert not (tmp_path / "final.npz").exists()
    if sig == signal.SIGINT:
        # Ctrl-C: a clean stop, no traceback, no orbax error, no half-written checkpoint.
        assert "stopped at step" in out and "rerun the same command to resume" in out, out
        assert "Traceback" not in out and "cannot schedule new futures" not in out, out
        assert not list((tmp_path / "checkpoints").rglob("*.orbax-checkpoint-tmp*"))
    resumed = run_job(tmp_path, 40)
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    logged = [int(w) for w in log.split() if w.isdigit()]
    assert logged and logged[0] > 5, f"the restarted run began from scratch:\n{log}"
    a = np.load(tmp_path / "final.npz")
    b = np.load(straight_run / "final.npz")
    assert len(a.files) == len(b.files) > 0
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])
    # metrics.jsonl: every (seed, step) logged exactly once, as in the uninterrupted run.
    expected = sorted((seed, s) for seed in (0, 1) for s in range(5, 41, 5))
    assert _train_steps(tmp_path) == _train_steps(straight_run) == expected
    # Rerunning the finished run changes nothing and does not crash.
    again = run_job(tmp_path, 40)
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log
    assert _train_steps(tmp_path) == expected


def test_epoch_batches_visit_every_example_once_and_depend_only_on_step():
    seen = np.concatenate([train.epoch_batch_indices(10, 3, s, seed=4) for s in range(3)])
    assert len(set(seen.tolist())) == 9  # the ragged tail (1 example) is dropped
    np.testing.assert_array_equal(
        train.epoch_batch_indices(10, 3, 7, seed=4), train.epoch_batch_indices(10, 3, 7, seed=4)
    )
    assert not np.array_equal(
        train.epoch_batch_indices(10, 3, 0, seed=4), train.epoch_batch_indices(10, 3, 3, seed=4)
    )


def test_cross_entropy_matches_optax_and_label_smoothing_floor_is_zero_for_perfect_logits():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((2, 3, 5)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 5, (2, 3)))
    weights = jnp.array([[1, 1, 0], [1, 0, 0]])
    loss_sum, weight_sum = train.cross_entropy(logits, targets, weights)
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights
    np.testing.assert_allclose(loss_sum, expected.sum(), rtol=1e-6)
    assert float(weight_sum) == 3
    # Logits equal to the log of the smoothed labels are optimal: the loss is exactly 0.
    alpha = 0.1
    smoothed = optax.smooth_labels(jax.nn.one_hot(targets, 5), alpha)
    best, _ = train.cross_entropy(jnp.log(smoothed), targets, weights, label_smoothing=alpha)
    np.testing.assert_allclose(best, 0.0, atol=1e-5)


@pytest.mark.parametrize("schedule", ["cosine", "inverse_sqrt", "constant"])
def test_schedule_warms_up_linearly_to_the_peak(schedule):
    lr = train.learning_rate_schedule(1.0, warmup_steps=10, total_steps=100, schedule=schedule)
    np.testing.assert_allclose([lr(0), lr(5), lr(10)], [0.0, 0.5, 1.0], atol=1e-6)
    assert float(lr(99)) <= 1.0
    if schedule == "cosine":
        assert float(lr(100)) < 1e-6
    with pytest.raises(ValueError, match="`schedule` must be one of"):
        train.learning_rate_schedule(1.0, warmup_steps=1, total_steps=2, schedule="linear")


@pytest.fixture(scope="module")
def trained_copy_model():
    arrays = copy_task(num_examples=512, length=5)
    cfg = nn.TransformerConfig(vocab_size=10, model_dim=32, num_heads=2, num_layers=1,
                               mlp_dim=64, max_len=8, dropout_rate=0.0)
    model = nn.EncoderDecoder(cfg)
    params = model.init(jax.random.key(0), arrays["source"][:1], arrays["target_in"][:1])
    optimizer = train.make_optimizer(3e-3, warmup_steps=20, total_steps=300)
    state = train.TrainState.create(params["params"], optimizer)
    step = train.make_train_step(train.seq2seq_loss_fn(model), optimizer)
    batch_at = lambda s: {k: v[train.epoch_batch_indices(512, 64, s, 0)] for k, v in arrays.items()}
    state, records = train.fit(state, step, batch_at, num_steps=300, base_key=jax.random.key(1),
                               progress=False, log_every=100)
    return model, state.params, arrays, records


def test_fit_learns_to_copy_and_decoding_recovers_the_source(trained_copy_model):
    model, params, arrays, records = trained_copy_model
    assert records[-1]["loss"] < records[0]["loss"]
    held_out = copy_task(num_examples=64, length=5, seed=1)
    metrics, predictions = train.evaluate_seq2seq(model, params, held_out, batch_size=32)
    assert metrics["exact_match"] >= 0.95, metrics
    assert predictions.shape == (64, 6)


def test_greedy_kv_cache_decoding_equals_argmax_of_full_forward_passes(trained_copy_model):
    model, params, arrays, _ = trained_copy_model
    source = jnp.asarray(arrays["source"][:8])
    greedy = np.asarray(train.decode(model, params, source, max_len=6))
    # Re-derive each token by running the whole decoder on the prefix (no cache).
    prefix = np.ones((8, 1), np.int32)
    forward = jax.jit(model.apply)
    for _ in range(6):
        logits = forward({"params": params}, source, jnp.asarray(prefix))
        prefix = np.concatenate([prefix, np.asarray(jnp.argmax(logits[:, -1], -1))[:, None]], 1)
    expected = prefix[:, 1:]
    finished = np.cumsum(expected == 2, axis=1) - (expected == 2) > 0  # after the first EOS
    np.testing.assert_array_equal(greedy, np.where(finished, 0, expected))


def test_beam_search_with_one_beam_is_greedy_and_wider_beams_score_no_worse():
    # A fixed 3-step "language model" where greedy is myopic: its first choice (token 3,
    # p=.6) leads to flat continuations, the alternative (token 4, p=.4) to a certain EOS.
    table = np.full((5, 5), -10.0, np.float32)  # log-probs of next token given previous
    table[1, 3], table[1, 4] = np.log(0.6), np.log(0.4)  # after BOS
    table[3, 2], table[3, 3] = np.log(0.3), np.log(0.3)
    table[3, 4] = np.log(0.4)
    table[4, 2] = 0.0  # after 4: EOS, surely
    table[2, 0] = 0.0

    def step_fn(state, tokens):
        return jnp.asarray(table)[tokens[:, 0]], state

    common = dict(batch_size=1, max_len=4, bos_id=1, eos_id=2, pad_id=0)
    state = jnp.zeros((1, 1))
    greedy = train.greedy_decode(step_fn, state, **common)
    one_beam, _ = train.beam_search(step_fn, state, beam_size=1, length_penalty=0.0, **common)
    np.testing.assert_array_equal(greedy, one_beam)
    wide, score = train.beam_search(step_fn, state, beam_size=3, length_penalty=0.0, **common)
    np.testing.assert_array_equal(wide[0], [4, 2, 0, 0])
    log_probs = jax.nn.log_softmax(jnp.asarray(table))  # the rows above are not normalised
    np.testing.assert_allclose(score[0], log_probs[1, 4] + log_probs[4, 2], rtol=1e-5)


def test_bucketed_batches_are_a_pure_function_of_the_step_and_trim_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 100)
    target = np.zeros((100, 32), np.int32)
    for i, n in enumerate(lengths):
        target[i, :n] = rng.integers(3, 9, n)
    arrays = {"target_out": target, "row": np.arange(100)}
    batch_at = train.make_batch_fn(arrays, 10, seed=3, bucket_by="target_out", pad_to_multiple=8)
    again = train.make_batch_fn(arrays, 10, seed=3, bucket_by="target_out", pad_to_multiple=8)
    epoch = [batch_at(s) for s in range(10)]
    assert sorted(np.concatenate([b["row"] for b in epoch]).tolist()) == list(range(100))
    for b in epoch:
        width = b["target_out"].shape[1]
        assert width % 8 == 0 and (b["target_out"][:, width - 8 :] != 0).any()
    # Any step, in any order, in a fresh process-like state gives the same batch.
    for s in (13, 4, 27):
        np.testing.assert_array_equal(batch_at(s)["row"], again(s)["row"])
    assert not np.array_equal(batch_at(0)["row"], batch_at(10)["row"])  # a new epoch reshuffles
