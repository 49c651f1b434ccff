"""The parallelism experiment (T sequential RNN steps vs one attention sweep)."""

import json

import pytest

from attnjax import cost, experiment
from experiments import parallelism
from tests.helpers import tour_run


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    return tour_run(tour_smoke, "parallelism")


def test_parallelism_smoke_times_both_layers_at_every_length(smoke):
    config, run_dir, results = smoke
    assert [r["length"] for r in results["rows"]] == [8, 32]
    for row in results["rows"]:
        assert row["rnn"]["sequential_steps"] == row["length"]
        assert row["attention"]["sequential_steps"] == 1
        for name in ("rnn", "attention"):
            assert len(row[name]["round_seconds"]) == config.repeats
            assert row[name]["seconds"] > 0
        ratio = row["attention"]["seconds"] / row["rnn"]["seconds"]
        assert ratio == pytest.approx(row["attention_over_rnn"])
        assert row["neighbour_cores"] >= 0
    assert set(results["fitted_exponent"]) == {"rnn", "attention"}
    assert (run_dir.path / "parallelism.png").read_bytes()[:4] == b"\x89PNG"


def test_parallelism_results_follow_the_contract_and_the_verdict_recomputes(smoke):
    config, run_dir, results = smoke
    stored = json.loads(run_dir.results_path.read_text())
    assert stored["seeds"] == [] and stored["published"] == []
    assert stored["rule"] == parallelism.rule(config) and "T <= 16" in stored["rule"]
    assert set(stored["headline"]) <= set(stored["metrics"])
    for metric in stored["metrics"].values():
        lo, hi = metric["ci95"]
        assert lo <= metric["mean"] <= hi
    assert len(stored["metrics"]["attention_over_rnn_at_short_length"]["per_repeat"]) == 2
    assert parallelism.verdict(stored, config)["verdict"] == stored["verdict"]
    assert "lengths" in stored["verdict"]


def _numbers(ratios, rnn_exponent, lengths=(16, 32, 64, 128, 256)):
    pairs = list(zip(lengths, ratios, strict=True))
    rows = [{"length": n, "attention_over_rnn": r} for n, r in pairs]
    return {"rows": rows, "short_rows": list(lengths),
            "fitted_exponent": {"rnn": rnn_exponent, "attention": 1.5},
            "exponent_ci95": {"rnn": [rnn_exponent - 0.1, rnn_exponent + 0.1],
                              "attention": [1.4, 1.6]},
            "crossover_length": next((n for n, r in pairs if r > 1), None),
            "ratio_at_short_length": {"mean": ratios[-1], "ci95": [ratios[-1], ratios[-1]]}}


@pytest.mark.parametrize(
    "ratios, rnn_exponent, expected",
    [
        ((0.3, 0.4, 0.5, 0.6, 0.7), 1.0, "claim holds"),
        ((0.3, 0.4, 0.5, 0.6, 1.2), 1.0, "mixed"),  # faster at 4 of 5 lengths, not all
        ((1.3, 1.4, 1.5, 1.6, 1.7), 1.0, "mixed"),  # the RNN part still holds
        ((1.3, 1.4, 1.5, 1.6, 1.7), 0.2, "claim does not hold here"),
        ((0.3, 0.4, 0.5, 0.6, 0.7), 0.2, "mixed"),
    ],
)
def test_parallelism_verdict_combines_the_sweep_and_the_sequential_part(ratios, rnn_exponent,
                                                                        expected):
    config = experiment.load_config("configs/parallelism.py:tour")
    text = parallelism.verdict(_numbers(ratios, rnn_exponent), config)["verdict"]
    assert text.startswith(expected + ":")


def test_parallelism_flops_come_from_attnjax_cost():
    config = experiment.load_config("configs/parallelism.py:tour")
    b, d, t = config.batch_size, config.width, 64
    assert parallelism.flops("rnn", config, t) == 3 * 2 * b * t * 3 * 2 * d * d  # GRU: 3 gates
    projections = 3 * 2 * b * t * 4 * d * d
    scores_and_values = 3 * 2 * b * 2 * t * t * d
    assert parallelism.flops("attention", config, t) == projections + scores_and_values
    assert cost.attention_layer_flops(t, width=d, heads=4, batch=b, backward=True) == (
        projections + scores_and_values)
