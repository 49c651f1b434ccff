"""Experiment plumbing (configs, run folders, CLI, tour) and the sqrt_dk experiment."""

import json
import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnjax import cli, experiment
from experiments import REGISTRY, Experiment, scaling, sqrt_dk, tour
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


# --------------------------------------------------------------------------- configs

ALL_TYPES_CONFIG = """
import ml_collections
from ml_collections import config_dict

def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.steps = 10
    config.rate = 0.5
    config.flag = True
    config.name = "adam"
    config.sizes = (4, 16)
    config.names = ["a", "b"]
    config.limit = config_dict.placeholder(int)
    config.model = ml_collections.ConfigDict({"num_heads": 4, "dropout": 0.1})
    if arg == "big":
        config.steps = 1000
    return config
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "all_types.py"
    path.write_text(ALL_TYPES_CONFIG)
    return str(path)


def test_load_config_default_is_the_tour_variant():
    default = experiment.load_config("configs/sqrt_dk.py")
    tour_variant = experiment.load_config("configs/sqrt_dk.py:tour")
    smoke = experiment.load_config(SMOKE)
    assert default.to_dict() == tour_variant.to_dict()
    assert tuple(default.head_dims) == (4, 16, 64, 256, 1024)
    assert smoke.num_seeds < default.num_seeds


def test_load_config_passes_the_variant_to_get_config(config_file):
    assert experiment.load_config(config_file).steps == 10
    assert experiment.load_config(f"{config_file}:big").steps == 1000


def test_load_config_finds_paths_relative_to_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert experiment.load_config(SMOKE).num_seeds == 2


def test_load_config_missing_file_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"configs/nope\.py.*looked in"):
        experiment.load_config("configs/nope.py")


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        experiment.load_config("configs/sqrt_dk.py:huge")


@pytest.mark.parametrize(
    "override, field, expected",
    [
        ("--config.steps=32", "steps", 32),
        ("--config.rate=1e-3", "rate", 1e-3),
        ("--config.rate=2", "rate", 2.0),
        ("--config.flag=false", "flag", False),
        ("--config.flag=1", "flag", True),
        ("--config.flag=TRUE", "flag", True),
        ("--config.name=sgd", "name", "sgd"),
        ("--config.name=1", "name", "1"),
        ("--config.sizes=(8, 32, 64)", "sizes", (8, 32, 64)),
        ("--config.sizes=8,32", "sizes", (8, 32)),
        ("--config.sizes=64", "sizes", (64,)),
        ("--config.names=['x']", "names", ["x"]),
        ("--config.limit=7", "limit", 7),
        ("--config.model.num_heads=8", "model.num_heads", 8),
        ("--config.model.dropout=0", "model.dropout", 0.0),
    ],
)
def test_overrides_are_parsed_with_the_type_of_the_field(config_file, override, field, expected):
    config = experiment.load_config(config_file, [override])
    value = config
    for part in field.split("."):
        value = value[part]
    assert value == expected
    assert type(value) is type(expected)


def test_unknown_override_field_is_named_and_valid_fields_listed(config_file):
    with pytest.raises(ValueError) as error:
        experiment.load_config(config_file, ["--config.model.num_head=8"])
    message = str(error.value)
    assert "unknown config field 'model.num_head'" in message
    assert "did you mean 'model.num_heads'" in message
    assert "valid fields: " in message and "steps" in message and "model.dropout" in message


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("--config.steps=ten", r"--config\.steps='ten': expected int"),
        ("--config.steps=1.5", r"--config\.steps='1\.5': expected int"),
        ("--config.rate=fast", r"--config\.rate='fast': expected float"),
        ("--config.flag=maybe", r"--config\.flag='maybe': expected a bool"),
        ("--config.sizes=(4.5,)", r"--config\.sizes: element 4\.5 is a float, expected int"),
        ("--config.sizes=[4", r"--config\.sizes='\[4': expected a Python literal"),
        ("--config.model=3", r"--config\.model is a group of fields.*model\.num_heads"),
        ("--steps=3", r"must look like --config\.FIELD=VALUE"),
        ("--config.steps", r"must look like --config\.FIELD=VALUE"),
    ],
)
def test_bad_overrides_raise_a_value_error_naming_the_field(config_file, override, pattern):
    with pytest.raises(ValueError, match=pattern):
        experiment.load_config(config_file, [override])


def test_loaded_config_is_locked_against_new_fields(config_file):
    config = experiment.load_config(config_file)
    with pytest.raises(AttributeError):
        config.stpes = 3


# --------------------------------------------------------------------------- run dirs


def test_run_dirs_are_fresh_timestamped_folders(tmp_path):
    first = experiment.RunDir.create("demo", root=tmp_path)
    second = experiment.RunDir.create("demo", root=tmp_path)
    assert first.path != second.path
    for run in (first, second):
        assert run.path.parent == tmp_path / "demo"
        assert re.fullmatch(r"\d{8}-\d{6}(-\d+)?", run.path.name)


def test_run_dir_writes_strict_json(tmp_path):
    run = experiment.RunDir.create("demo", workdir=tmp_path / "run")
    run.write_config(ml_collections.ConfigDict({"sizes": (1, 2), "rate": 0.5}))
    run.log({"step": np.int32(1), "loss": np.float32(0.25), "grad": jnp.array([1.0, 2.0])})
    run.log({"step": 2, "loss": float("nan")})
    run.write_results({"value": np.float64(math.inf)})
    assert json.loads(run.config_path.read_text()) == {"sizes": [1, 2], "rate": 0.5}
    lines = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 0.25, "grad": [1.0, 2.0]}, {"step": 2, "loss": None}]
    assert json.loads(run.results_path.read_text()) == {"value": None}
    # Reusing an explicit workdir restarts its metrics instead of mixing two runs.
    experiment.RunDir.create("demo", workdir=tmp_path / "run")
    assert not run.metrics_path.exists()


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


# --------------------------------------------------------------------------- scaling


@pytest.mark.parametrize("is_causal", [False, True])
def test_scaling_naive_attention_matches_jax_nn(rng, is_causal):
    q, k, v = (jnp.asarray(rng.normal(size=(2, 16, 4, 8)), jnp.float32) for _ in range(3))
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=is_causal)
    np.testing.assert_allclose(scaling.naive_attention(q, k, v, is_causal), expected,
                               rtol=1e-5, atol=1e-6)


def test_scaling_flops_count_two_forward_matmuls_seven_with_backward_causal_half():
    config = experiment.load_config("configs/scaling.py:smoke")
    b, h, d, n = config.batch_size, 8, config.head_dim, 512
    assert scaling.flops(config, n, h, "fwd", False) == 2 * (2 * b * h * n * n * d)
    assert scaling.flops(config, n, h, "fwd+bwd", False) == 7 * (2 * b * h * n * n * d)
    assert scaling.flops(config, n, h, "fwd+bwd", True) == 3.5 * (2 * b * h * n * n * d)


@pytest.mark.skipif(scaling.peak_rss_increment(lambda: None) is None,
                    reason="/proc/self/clear_refs is not writable here")
def test_scaling_peak_memory_sees_a_64_mib_allocation():
    increment = scaling.peak_rss_increment(lambda: np.ones(8 * 2**20).sum())  # 64 MiB
    assert 60 * 2**20 <= increment <= 80 * 2**20


def _synthetic_rows(config, exponents):
    """ok rows whose time grows as N^exponents[impl] and memory as N^2."""
    rows = []
    for n in (1024, 2048, 4096):
        for mode in config.modes:
            for causal in config.causal:
                block = [{"impl": impl, "length": n, "num_heads": config.num_heads,
                          "mode": mode, "causal": causal, "status": "ok",
                          "seconds": 1e-3 * (n / 1024) ** e, "percent_of_ceiling": 50.0,
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
        ({"xla": 0.8, "naive": 1.1}, "claim does not hold"),
    ],
)
def test_scaling_verdict_follows_the_fitted_time_exponents(exponents, verdict):
    config = experiment.load_config("configs/scaling.py:tour")
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
    text = scaling.verdict_of(results, config)["verdict"]
    assert text.startswith(verdict)
    # Super-quadratic series are called that, not merely "not quadratic".
    assert ("faster than N^2.3" in text) == (max(exponents.values()) > 2.3)


def test_scaling_tour_smoke_measures_every_row_against_jax_nn(tour_smoke):
    tour_dir, _ = tour_smoke
    workdir = tour_dir / "scaling"
    results = json.loads((workdir / "results.json").read_text())
    config = experiment.load_config("configs/scaling.py:smoke")
    rows = results["rows"]
    expected = {(impl, n, mode, causal) for impl in config.impls for n in config.lengths
                for mode in config.modes for causal in config.causal}
    assert {(r["impl"], r["length"], r["mode"], r["causal"]) for r in rows} == expected
    metrics = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == len(rows)
    for row in rows:
        assert row["status"] in ("ok", "disturbed"), row["reason"]
        assert 0 < row["seconds_best"] <= row["seconds_median"]
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


# --------------------------------------------------------------------------- tour and CLI


def test_tour_smoke_writes_a_report_with_a_sqrt_dk_row(tour_smoke):
    tmp_path, status = tour_smoke
    assert status == 0, (tmp_path / "REPORT.md").read_text()
    report = (tmp_path / "REPORT.md").read_text()
    assert report.startswith("# attnjax tour")
    assert "## Environment" in report and f"| {jax.__version__} / " in report
    assert "| claim | experiment | measured | verdict | figures |" in report
    (row,) = [line for line in report.splitlines() if line.startswith("| without the 1/sqrt")]
    assert "[`sqrt_dk`](sqrt_dk/)" in row and "At d_k=1024" in row
    assert re.search(r"\*\*(claim holds|claim does not hold|mixed)\*\*", row)
    assert "[sqrt_dk.png](sqrt_dk/sqrt_dk.png)" in row
    assert (tmp_path / "sqrt_dk" / "sqrt_dk.png").is_file()
    assert (tmp_path / "sqrt_dk" / "results.json").is_file()


def test_tour_reports_a_crashing_experiment_and_exits_nonzero(tmp_path, monkeypatch):
    broken = Experiment(name="no_such_experiment", claim="a module that does not exist")
    monkeypatch.setattr(tour, "REGISTRY", {broken.name: broken})
    assert tour.main(["--smoke", "--workdir", str(tmp_path)]) == 1
    report = (tmp_path / "REPORT.md").read_text()
    assert "| a module that does not exist |" in report and "**crashed**" in report
    assert "## Errors" in report and "ModuleNotFoundError" in report
    assert (tmp_path / "no_such_experiment" / "error.txt").is_file()


def test_cli_list_prints_every_registered_claim(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name, spec in REGISTRY.items():
        assert re.search(rf"^{name}\s+{re.escape(spec.claim)}$", out, re.M)


def test_cli_refuses_an_unknown_experiment():
    with pytest.raises(SystemExit, match="unknown experiment 'nope'; registered: sqrt_dk"):
        cli.main(["run", "nope"])


def test_cli_outside_a_checkout_says_to_install_with_pip_e(tmp_path):
    with pytest.raises(SystemExit, match=r"pip install -e \."):
        cli._use_checkout(tmp_path)


def test_cli_finds_the_experiments_of_the_checkout():
    package = cli._use_checkout(REPO_ROOT)
    assert "sqrt_dk" in package.REGISTRY
    assert str(REPO_ROOT) in sys.path


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
