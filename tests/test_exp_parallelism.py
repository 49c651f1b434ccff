"""The parallelism experiment."""

import json

import pytest


def _results(tour_smoke, name):
    tour_dir, _ = tour_smoke
    return tour_dir / name, json.loads((tour_dir / name / "results.json").read_text())


def test_parallelism_smoke_times_both_layers_at_every_length(tour_smoke):
    workdir, results = _results(tour_smoke, "parallelism")
    assert [r["length"] for r in results["rows"]] == [8, 32]
    for row in results["rows"]:
        assert row["rnn"]["sequential_steps"] == row["length"]
        assert row["attention"]["sequential_steps"] == 1
        assert row["rnn"]["seconds"] > 0 and row["attention"]["seconds"] > 0
        ratio = row["attention"]["seconds"] / row["rnn"]["seconds"]
        assert ratio == pytest.approx(row["attention_over_rnn"])
    assert set(results["fitted_exponent"]) == {"rnn", "attention"}
    assert (workdir / "parallelism.png").read_bytes()[:4] == b"\x89PNG"
