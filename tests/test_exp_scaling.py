"""The scaling experiment (attention speed and memory benchmark)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import cost, experiment
from experiments import scaling
from tests.helpers import tour_run


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "scaling")


@pytest.mark.parametrize("is_causal", [False, True])
def test_scaling_naive_attention_matches_jax_nn(rng, is_causal):
    q, k, v = (jnp.asarray(rng.normal(size=(2, 16, 4, 8)), jnp.float32) for _ in range(3))
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)
    np.testing.assert_allclose(scaling.naive_attention(q, k, v, is_causal), expected,
                               rtol=1e-5, atol=1e-6)


def test_scaling_flops_count_two_forward_matmuls_seven_with_backward_causal_pairs():
    config = experiment.load_config("configs/scaling.py:smoke")
    b, h, d, n = config.batch_size, 8, config.head_dim, 512
    assert scaling.flops(config, n, h, "fwd", False) == 2 * (2 * b * h * n * n * d)
    assert scaling.flops(config, n, h, "fwd+bwd", False) == 7 * (2 * b * h * n * n * d)
    # Causal: the useful pairs, N(N+1)/2 of them.
    assert scaling.flops(config, n, h, "fwd+bwd", True) == 7 * 2 * b * h * n * (n + 1) // 2 * d
    assert scaling.flops(config, n, h, "fwd", False) == cost.attention_matmul_flops(
        n, heads=h, head_dim=d, batch=b)
    assert scaling.naive_bytes(config, n, h, "fwd+bwd") == 6 * b * h * n * n * 4


def _synthetic_rows(config, exponents):
    """ok rows whose time grows as N^exponents[impl] and memory as N^2."""
    rows = []
    for n in (1024, 2048, 4096):
        for mode in config.modes:
            for causal in config.causal:
                block = [{"impl": impl, "length": n, "num_heads": config.num_heads,
                          "mode": mode, "causal": causal, "status": "ok",
                          "seconds": 1e-3 * (n / 1024) ** e, "percent_of_ceiling": 50.0,
                          "round_seconds": [1e-3 * (n / 1024) ** e * f for f in (1, 1.01)],
                          "peak_rss_increment_bytes": 4 * n * n, "input_bytes": 0}
                         for impl, e in exponents.items()]
                scaling._add_ratios(block)
                rows += block
    return rows


@pytest.mark.parametrize(
    "exponents, verdict",
    [
        ({"xla": 2.0, "naive": 1.9}, "claim holds"),
        ({"xla": 2.0, "naive": 1.2}, "mixed"),
        ({"xla": 2.0, "naive": 2.6}, "mixed"),
        ({"xla": 0.8, "naive": 1.1}, "claim does not hold here"),
    ],
)
def test_scaling_verdict_follows_the_fitted_time_exponents(exponents, verdict):
    config = experiment.load_config("configs/scaling.py")  # full: fits over N >= 1024
    results = {**scaling.summarise(_synthetic_rows(config, exponents), config),
               "environment": {"jax_cpu_threads": 2}, "matmul_ceiling": {"gflop_per_second": 1}}
    fitted = results["fitted_exponent"]["naive"]["fwd+bwd"]["n_ge_1024"]
    assert fitted["exponent"] == pytest.approx(exponents["naive"])
    assert (fitted["min_length"], fitted["max_length"], fitted["points"]) == (1024, 4096, 3)
    speedup = results["speedup_vs_xla"]["naive"]["fwd"]["at_largest_length"]
    assert speedup == pytest.approx(4 ** (exponents["xla"] - exponents["naive"]))
    memory = results["fits_in_machine_memory"]["xla"]["fwd"]
    assert memory["extrapolated"]
    assert memory["max_length"] == pytest.approx(math.sqrt(24 * 2**30 / 4), abs=1)
    interval = results["exponent_interval"]["naive"]["fwd+bwd"]
    assert interval["ci95"][0] <= exponents["naive"] <= interval["ci95"][1] + 1e-9
    text = scaling.verdict(results, config)["verdict"]
    assert text.startswith(verdict + ":")
    n = len(config.modes) * len(config.causal) * len(exponents)
    assert f"of {n} series" in text
    # Super-quadratic series are called that, not merely "not quadratic".
    assert ("faster than N^2.3" in text) == (max(exponents.values()) > 2.3)


def test_scaling_smoke_measures_every_row_against_jax_nn(smoke):
    config, run_dir, results = smoke
    workdir = run_dir.path
    rows = results["rows"]
    expected = {(impl, n, mode, causal) for impl in config.impls for n in config.lengths
                for mode in config.modes for causal in config.causal}
    assert {(r["impl"], r["length"], r["mode"], r["causal"]) for r in rows} == expected
    metrics = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == len(rows)
    for row in rows:
        assert row["status"] in ("ok", "disturbed"), row["reason"]
        assert 0 < row["seconds_best"] <= row["seconds_median"]
        assert len(row["round_seconds"]) == row["rounds"] >= config.repeats
        assert row["seconds_best"] == min(row["round_seconds"])
        assert row["compile_seconds"] > 0 and row["neighbour_cores"] >= 0
        assert row["gflop_per_second"] > 0 and row["xla_memory"]["temp_bytes"] > 0
        if row["impl"] == "xla" and row["status"] == "ok":
            assert row["speedup_vs_xla"] == 1.0
    assert results["matmul_ceiling"]["gflop_per_second"] > 0
    assert results["environment"]["jax_cpu_threads"] >= 1
    assert set(results["fitted_exponent"]) == set(config.impls)
    assert results["verdict"].startswith(experiment.VERDICTS)
    for figure in ("scaling_time.png", "scaling_memory.png", "scaling_efficiency.png"):
        assert figure in results["figures"]
        assert (workdir / figure).read_bytes()[:4] == b"\x89PNG"




def test_scaling_results_follow_the_contract_and_the_verdict_recomputes(smoke):
    config, run_dir, results = smoke
    stored = json.loads(run_dir.results_path.read_text())
    assert stored["seeds"] == [] and stored["published"] == []
    assert stored["rule"] == scaling.rule(config) and "[1.7, 2.3]" in stored["rule"]
    assert stored["verdict"] == scaling.verdict(stored, config)["verdict"]
    assert stored["headline"] and set(stored["headline"]) <= set(stored["metrics"])
    for metric in stored["metrics"].values():
        assert metric["ci95"][0] <= metric["mean"] <= metric["ci95"][1] + 1e-12
