"""The trainer (``attnjax.train.train``): the seed axis, learning-rate sweeps, RNG streams,
config checks; and the statistics and verdict helpers every experiment's verdict uses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import experiment, nn, stats, train

CONFIG = {"num_steps": 30, "learning_rate": 3e-3, "warmup_steps": 5, "schedule": "cosine",
          "weight_decay": 0.01, "clip_norm": 1.0, "log_every": 10, "checkpoint_every": 10}
MODEL = nn.DecoderOnlyLM(nn.TransformerConfig(
    vocab_size=16, model_dim=16, num_heads=2, num_layers=1, mlp_dim=32, max_len=16,
    dropout_rate=0.1))


def _loss_fn(params, batch, key):
    logits = MODEL.apply({"params": params}, batch["tokens"][:, :-1], deterministic=False,
                         rngs={"dropout": key})
    losses = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch["tokens"][:, 1:, None],
                                  -1)[..., 0]
    return losses.mean(), {"loss_sum": losses.sum(),
                           "weight_sum": jnp.asarray(losses.size, jnp.float32)}


def _batches(rngs, step):
    rng = np.random.default_rng([rngs.int("data_order"), step])
    return {"tokens": rng.integers(1, 16, (8, 13)).astype(np.int32)}


def _init(key):
    return MODEL.init(key, jnp.ones((1, 12), jnp.int32))["params"]


def _train(**kwargs):
    args = {"name": "lm", "seeds": (0, 1, 2), "config": CONFIG, "init": _init,
            "loss_fn": _loss_fn, "batches": _batches, "progress": False}
    return train.train(**{**args, **kwargs})


def _curve(result, seed, learning_rate=None):
    return [r["loss"] for r in result.history(seed, learning_rate, "train")]


@pytest.fixture(scope="module")
def vmapped():
    return _train(vmap_seeds=True)


def test_vmapped_seeds_follow_the_loss_curves_of_separate_runs(vmapped):
    looped = _train(vmap_seeds=False)
    assert vmapped.vmapped and not looped.vmapped
    for seed in (0, 1, 2):
        np.testing.assert_allclose(_curve(vmapped, seed), _curve(looped, seed), atol=1e-5)
    # Parameters agree to about the learning rate (Adam amplifies float noise in near-zero
    # gradients), far below the spread between seeds.
    for a, b in zip(vmapped.params, looped.params, strict=True):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert np.max(np.abs(x - y)) < 5 * CONFIG["learning_rate"]


def test_seeds_differ_in_initialisation_data_and_dropout(vmapped):
    curves = [_curve(vmapped, s) for s in (0, 1, 2)]
    assert curves[0] != curves[1] != curves[2]
    a, b = (jax.tree.leaves(_init(train.SeedRngs(s).key("init"))) for s in (0, 1))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    r = train.SeedRngs(3)
    assert r.int("data_order") == train.SeedRngs(3).int("data_order")  # deterministic
    assert r.int("data_order") != r.int("data_draw")  # independent streams
    assert not np.array_equal(jax.random.key_data(r.key("init")),
                              jax.random.key_data(r.key("dropout")))


def test_a_learning_rate_sweep_is_one_program_whose_members_match_single_rate_runs(vmapped):
    sweep = _train(seeds=(0, 1), learning_rates=(1e-3, 3e-3), vmap_seeds=True)
    assert [(m.seed, m.learning_rate) for m in sweep.members] == [
        (0, 1e-3), (1, 1e-3), (0, 3e-3), (1, 3e-3)]
    for seed in (0, 1):
        np.testing.assert_allclose(_curve(sweep, seed, 3e-3), _curve(vmapped, seed),
                                   atol=1e-5)
    single = _train(seeds=(0,), config={**CONFIG, "learning_rate": 1e-3})
    np.testing.assert_allclose(_curve(sweep, 0, 1e-3), _curve(single, 0), atol=1e-5)


def test_bad_train_configs_are_refused_naming_the_field():
    message = r"train.warmup_steps=100 must be in \[0, train.num_steps=50\]"
    with pytest.raises(ValueError, match=message):
        train.check_train_config({**CONFIG, "num_steps": 50, "warmup_steps": 100})
    with pytest.raises(ValueError, match="train.learning_rate"):
        train.check_train_config({**CONFIG, "learning_rate": 0.0})
    with pytest.raises(ValueError, match="seeds.*repeats"):
        _train(seeds=(0, 0))
    with pytest.raises(ValueError, match="vmap_seeds"):
        _train(vmap_seeds="yes")


def test_the_step_donates_its_state_unless_asked_not_to():
    optimizer = train.make_optimizer(1e-3, warmup_steps=1, total_steps=10)
    batch = _batches(train.SeedRngs(0), 0)
    for donate in (True, False):
        state = train.TrainState.create(_init(jax.random.key(0)), optimizer)
        step = train.make_train_step(_loss_fn, optimizer, donate=donate)
        step(state, batch, jax.random.key(1))
        leaf = jax.tree.leaves(state.params)[0]
        if donate:
            with pytest.raises(RuntimeError, match="deleted"):
                np.asarray(leaf)
        else:
            assert np.isfinite(np.asarray(leaf)).all()


def test_stack_batches_pads_ragged_members_with_zeros():
    stacked = train.stack_batches([{"x": np.ones((2, 3), np.int32)},
                                   {"x": np.ones((2, 5), np.int32)}])
    assert stacked["x"].shape == (2, 2, 5)
    assert stacked["x"][0, :, 3:].sum() == 0 and stacked["x"][1].sum() == 10


def test_run_dir_keeps_history_and_drops_only_records_after_the_restored_step(tmp_path):
    run = experiment.RunDir.create("demo", tmp_path / "run")
    for step in (10, 20, 30):
        run.log({"run": "a", "seed": 0, "step": step})
    run.log({"run": "b", "seed": 0, "step": 30})
    again = experiment.RunDir.create("demo", tmp_path / "run")  # an explicit workdir reopens
    assert len(again.records()) == 4
    assert again.drop_records(lambda r: r["run"] == "a" and r["step"] > 10) == 2
    assert [(r["run"], r["step"]) for r in again.records()] == [("a", 10), ("b", 30)]


def test_an_unfinished_run_of_the_same_config_is_resumed_by_default(tmp_path):
    config = {"a": 1}
    first = experiment.RunDir.create("demo", root=tmp_path, config=config)
    first.write_config(config)
    assert experiment.RunDir.create("demo", root=tmp_path, config=config) == first
    assert experiment.RunDir.create("demo", root=tmp_path, config={"a": 2}) != first
    first.write_results({"done": True})
    assert experiment.RunDir.create("demo", root=tmp_path, config=config) != first


# --------------------------------------------------------------------------- statistics


def test_bootstrap_interval_brackets_the_mean_and_is_a_pure_function():
    values = np.random.default_rng(0).normal(3.0, 1.0, 40)
    lo, hi = stats.bootstrap_ci(values)
    assert lo < values.mean() < hi
    # Standard error of the mean is 1/sqrt(40) = 0.16: a 95% interval is about +-0.31.
    assert 0.45 < hi - lo < 0.8
    assert stats.bootstrap_ci(values) == (lo, hi)
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert stats.bootstrap_ci([5.0]) == (5.0, 5.0)
    with pytest.raises(ValueError, match="finite"):
        stats.bootstrap_ci([1.0, float("nan")])


def test_summary_has_the_results_contract_fields():
    s = stats.summary([0.5, 0.7, 0.9])
    assert s["per_seed"] == [0.5, 0.7, 0.9] and s["mean"] == pytest.approx(0.7)
    assert 0.5 <= s["ci95"][0] <= 0.7 <= s["ci95"][1] <= 0.9
    assert stats.format_summary(s, percent=True).startswith("70.0% [")
    item = stats.item_summary([1, 0, 1, 1])
    assert item["n"] == 4 and item["mean"] == 0.75


def test_paired_bootstrap_detects_a_consistent_difference_and_not_noise():
    rng = np.random.default_rng(1)
    base = rng.normal(size=200)
    better = stats.paired_bootstrap(base + 0.3, base)
    assert better["difference"] == pytest.approx(0.3)
    assert better["ci95"][0] > 0 and better["p_not_greater"] < 0.01
    noise = stats.paired_bootstrap(base + rng.normal(0, 0.01, 200), base)
    assert noise["ci95"][0] < 0 < noise["ci95"][1] or abs(noise["difference"]) < 0.01
    with pytest.raises(ValueError, match="pair up"):
        stats.paired_bootstrap([1.0, 2.0], [1.0])


def test_ratio_summary_resamples_whole_clusters():
    # 100 sentences, 4 arcs each; every arc of a sentence is right or wrong together.
    right = (np.random.default_rng(2).random(100) < 0.6).astype(float) * 4
    arcs = np.full(100, 4.0)
    clustered = stats.ratio_summary(right, arcs)
    assert clustered["mean"] == pytest.approx(right.sum() / 400) and clustered["n"] == 400
    assert clustered["clusters"] == 100
    # The same arcs as 400 independent items give an interval about half as wide
    # (clusters of 4 perfectly correlated items: sqrt(4) = 2).
    independent = stats.item_summary(np.repeat(right / 4, 4))
    width = lambda m: m["ci95"][1] - m["ci95"][0]  # noqa: E731
    assert 1.6 < width(clustered) / width(independent) < 2.4
    assert stats.ratio_summary([1.0, 2.0], [2.0, 2.0])["mean"] == 0.75
    with pytest.raises(ValueError, match="pair up"):
        stats.ratio_summary([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive total"):
        stats.ratio_summary([0.0], [0.0])


@pytest.mark.parametrize(("passes", "verdict"), [
    ([1, 1, 1, 1, 0], "claim holds"), ([1, 1, 1, 0, 0], "mixed"), ([1, 1, 0, 0, 0], "mixed"),
    ([1, 0, 0, 0, 0], "claim does not hold here"), ([1, 1, 1], "claim holds"),
    ([1, 1, 0], "mixed"), ([0, 0, 0], "claim does not hold here"), ([1, 0], "mixed"),
    ([1, 1], "claim holds"),
])
def test_seed_verdict_counts_seeds_against_the_rule(passes, verdict):
    cls, text = experiment.seed_verdict(passes)
    assert cls == verdict and text == f"{sum(passes)} of {len(passes)} seeds"


def test_combined_verdict_holds_only_if_every_part_holds():
    holds, fails = "claim holds: x", "claim does not hold here: y"
    assert experiment.combine_verdicts({"a": holds, "b": holds}) == "claim holds"
    assert experiment.combine_verdicts({"a": fails, "b": fails}) == "claim does not hold here"
    assert experiment.combine_verdicts({"a": holds, "b": fails}) == "mixed"


def test_results_without_the_contract_fields_are_refused(tmp_path):
    run = experiment.RunDir.create("demo", tmp_path)
    good = {"claim": "c", "rule": "r", "measured": "m", "verdict": "mixed: x", "seeds": [0, 1],
            "metrics": {"acc": {"per_seed": [0.5, 0.6], "mean": 0.55, "ci95": [0.5, 0.6]}}}
    experiment.check_results("demo", good, run)
    for broken, message in [
        ({**good, "rule": ""}, "lack rule"),
        ({k: v for k, v in good.items() if k != "seeds"}, "'seeds'"),
        ({**good, "metrics": {}}, "'metrics'"),
        ({**good, "metrics": {"acc": {"mean": 0.5}}}, "needs 'mean' and 'ci95'"),
        ({**good, "seeds": [0, 1, 2]}, "3 seeds"),
        ({**good, "verdict": "probably"}, "must start with"),
    ]:
        with pytest.raises(ValueError, match=message):
            experiment.check_results("demo", broken, run)
