"""The sqrt_dk experiment."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax import experiment
from experiments import REGISTRY, sqrt_dk
from tests.conftest import REPO_ROOT

SMOKE = "configs/sqrt_dk.py:smoke"


def _leaves(obj):
    """Every number in a nested JSON object."""
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _leaves(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _leaves(value)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield obj


# --------------------------------------------------------------------------- sqrt_dk


@pytest.mark.parametrize("logit_std", [1.0, 30.0])  # 30: near one-hot rows, as unscaled
def test_softmax_jacobian_norm_matches_a_float64_jacobian(logit_std):
    logits = logit_std * np.random.default_rng(0).normal(size=(16, 64))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    jacobians = p[:, :, None] * np.eye(64) - p[:, :, None] * p[:, None, :]  # diag(p) - p p^T
    expected = np.sqrt(np.sum(jacobians**2, axis=(1, 2)))
    weights = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    np.testing.assert_allclose(sqrt_dk.softmax_jacobian_norm(weights), expected, rtol=1e-4)


def test_softmax_jacobian_norm_is_zero_for_one_hot_rows():
    np.testing.assert_array_equal(sqrt_dk.softmax_jacobian_norm(jnp.eye(4)), 0.0)


def _summary(max_weight, median_ratio, batch_ratio):
    def arm(max_weight, median, rms):
        return {"max_weight": [max_weight], "grad_norm_median": [median], "grad_norm": [rms]}

    return {
        "scaled": arm(0.1, 1.0, 1.0),
        "unscaled": arm(max_weight, median_ratio, batch_ratio),
    }


@pytest.mark.parametrize(
    "stats, thresholds, verdict",
    [
        ((0.95, 0.01, 0.05), (0.9, 0.1), "claim holds"),
        ((0.95, 0.01, 20.0), (0.9, 0.1), "mixed"),
        ((0.5, 0.5, 2.0), (0.9, 0.1), "claim does not hold"),
        ((0.95, 0.01, 0.05), (0.99, 0.001), "claim does not hold"),
    ],
)
def test_verdict_follows_the_measurements_and_config_thresholds(stats, thresholds, verdict):
    config_thresholds = ml_collections.ConfigDict(
        {"saturated_max_weight": thresholds[0], "vanishing_grad_ratio": thresholds[1]}
    )
    checks, text = sqrt_dk.evaluate_claim([1024], _summary(*stats), config_thresholds)
    assert text.startswith(verdict + ":")
    assert "d_k=1024" in text
    assert set(checks) == {
        "softmax_saturates",
        "median_query_gradient_vanishes",
        "batch_gradient_vanishes",
    }


def _run_smoke(workdir):
    return experiment.main("sqrt_dk", sqrt_dk.run, ["--config", SMOKE, "--workdir", str(workdir)])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sqrt_dk_smoke")
    results = _run_smoke(workdir)
    return workdir, results


def test_smoke_run_writes_config_metrics_results_and_figure(smoke_run):
    workdir, results = smoke_run
    config = experiment.load_config(SMOKE)
    assert json.loads((workdir / "config.json").read_text()) == experiment.to_json(config)

    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["head_dim"] for line in metrics] == list(config.head_dims)
    expected_keys = {"head_dim"} | {
        f"{arm}/{stat}{suffix}"
        for arm in sqrt_dk.ARMS
        for stat in sqrt_dk.STATS
        for suffix in ("", "_std")
    }
    assert all(set(line) == expected_keys for line in metrics)

    stored = json.loads((workdir / "results.json").read_text())
    assert stored == experiment.to_json(results)
    assert stored["experiment"] == "sqrt_dk"
    assert stored["claim"] == REGISTRY["sqrt_dk"].claim
    assert stored["measured"].startswith("At d_k=1024")
    assert stored["verdict"].startswith(experiment.VERDICTS)
    assert stored["head_dim"] == list(config.head_dims)
    for table in ("mean", "std_over_seeds"):
        for arm in sqrt_dk.ARMS:
            assert set(stored[table][arm]) == set(sqrt_dk.STATS)
            assert all(len(v) == len(config.head_dims) for v in stored[table][arm].values())
    numbers = list(_leaves(stored)) + [x for line in metrics for x in _leaves(line)]
    assert numbers and all(math.isfinite(x) for x in numbers)

    figure = workdir / stored["figures"][0]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


def test_smoke_run_is_deterministic(smoke_run, tmp_path):
    workdir, _ = smoke_run
    _run_smoke(tmp_path)
    for name in ("results.json", "metrics.jsonl"):
        assert (tmp_path / name).read_text() == (workdir / name).read_text()


def test_unscaled_logit_variance_is_d_k_and_scaled_is_one(smoke_run):
    _, results = smoke_run
    head_dims = np.array(results["head_dim"])
    unscaled = np.array(results["mean"]["unscaled"]["logit_variance"])
    scaled = np.array(results["mean"]["scaled"]["logit_variance"])
    np.testing.assert_allclose(unscaled, head_dims, rtol=0.2)
    np.testing.assert_allclose(scaled, 1.0, rtol=0.2)


def test_unscaled_softmax_is_sharper_at_the_largest_d_k(smoke_run):
    _, results = smoke_run
    scaled, unscaled = results["mean"]["scaled"], results["mean"]["unscaled"]
    assert unscaled["entropy"][-1] < scaled["entropy"][-1]
    assert unscaled["max_weight"][-1] > scaled["max_weight"][-1]
    assert unscaled["grad_norm_median"][-1] < scaled["grad_norm_median"][-1]


def test_verdict_is_recomputed_from_the_stored_means(smoke_run):
    _, results = smoke_run
    config = experiment.load_config(SMOKE)
    _, verdict = sqrt_dk.evaluate_claim(results["head_dim"], results["mean"], config.thresholds)
    assert verdict == results["verdict"]




def test_cli_run_in_a_fresh_process_reproduces_the_smoke_numbers(smoke_run, tmp_path):
    workdir, _ = smoke_run
    command = [sys.executable, "-m", "attnjax.cli", "run", "sqrt_dk", "--config", SMOKE]
    result = subprocess.run(
        [*command, "--workdir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "verdict: " in result.stdout and f"results written to {tmp_path}" in result.stdout
    # A fresh process compiles from scratch: the numbers must still be bit-identical.
    assert (tmp_path / "results.json").read_text() == (workdir / "results.json").read_text()
