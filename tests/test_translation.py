"""experiments/translation.py end to end on its smoke config, as the smoke tour ran it."""

import json

import pytest

from attnjax import experiment
from experiments import translation


@pytest.fixture(scope="module")
def smoke_run(tour_smoke):
    tour_dir, _ = tour_smoke
    workdir = tour_dir / "translation"
    config = experiment.load_config("configs/translation.py:smoke")
    return workdir, config, json.loads((workdir / "results.json").read_text())


def test_smoke_run_writes_results_metrics_and_heatmaps(smoke_run):
    workdir, config, results = smoke_run
    assert set(results["models"]) == set(config.models)
    for entry in results["models"].values():
        assert 0.0 <= entry["test_exact_match"] <= 1.0
        assert entry["test_num_examples"] == config.eval.max_examples
        assert entry["tokens_per_second"] > 0
    transformer = results["models"]["transformer"]["alignment"]
    assert len(transformer["aer_per_layer_head"]) == config.transformer.num_layers
    assert 0.0 <= transformer["diagonal_aer"] <= 1.0
    assert "alignment" in results["models"]["gru_attention"]
    assert "alignment" not in results["models"]["gru"]  # no attention, nothing to score
    for figure in results["figures"]:
        assert (workdir / figure).read_bytes()[:4] == b"\x89PNG"
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {line["model"] for line in lines} == set(config.models)
    assert json.loads((workdir / "results.json").read_text())["verdict"] == results["verdict"]


def test_rerun_in_the_same_folder_resumes_from_the_final_checkpoint(smoke_run):
    workdir, config, results = smoke_run
    again = experiment.run_experiment(
        "translation", translation.run, config, experiment.RunDir.create("translation", workdir)
    )
    for name in config.models:
        assert again["models"][name]["tokens_per_second"] is None  # no step was retrained
        assert again["models"][name]["test_exact_match"] == results["models"][name][
            "test_exact_match"]
