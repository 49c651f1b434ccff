"""Experiment plumbing: configs, run folders, results contract, CLI, tour."""

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
from experiments import REGISTRY, Experiment, tour
from tests.conftest import REPO_ROOT

SMOKE = "configs/sqrt_dk.py:smoke"


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


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_config_has_tour_and_smoke_variants_with_the_protocol_seed_counts(name):
    module = experiment._import_file(experiment._resolve_config_path(f"configs/{name}.py"))
    assert {"tour", "smoke"} <= set(module.VARIANTS)
    default, tour_variant, smoke = (
        experiment.load_config(f"configs/{name}.py" + suffix) for suffix in ("", ":tour", ":smoke"))
    if smoke.get("seeds"):  # a trained experiment: >= 5 / >= 3 / 2 seeds
        assert len(default.seeds) >= 5 and len(tour_variant.seeds) >= 3
        assert len(smoke.seeds) == 2


def test_configs_load_by_module_name_too():
    by_path = experiment.load_config("configs/sqrt_dk.py:smoke")
    assert experiment.load_config("configs.sqrt_dk:smoke").to_dict() == by_path.to_dict()


def test_help_lists_the_variants_and_fields_of_the_config():
    out = subprocess.run([sys.executable, "-m", "experiments.induction", "--help"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "variants (configs/induction.py:VARIANT):" in out.stdout
    assert "tour" in out.stdout and "smoke" in out.stdout
    assert "fields (--config.FIELD=VALUE; default variant):" in out.stdout
    assert "  train.num_steps = " in out.stdout and "  seeds = " in out.stdout


def test_load_config_passes_the_variant_to_get_config(config_file):
    assert experiment.load_config(config_file).steps == 10
    assert experiment.load_config(f"{config_file}:big").steps == 1000


def test_load_config_finds_paths_relative_to_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(experiment.load_config(SMOKE).seeds) == 2


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
    # Reopening an explicit workdir keeps its history (a resumed trainer trims it).
    experiment.RunDir.create("demo", workdir=tmp_path / "run")
    assert len(run.records()) == 2


# --------------------------------------------------------------------------- tour and CLI


def test_tour_smoke_writes_a_report_with_a_sqrt_dk_row(tour_smoke):
    tmp_path, status = tour_smoke
    assert status == 0, (tmp_path / "REPORT.md").read_text()
    report = (tmp_path / "REPORT.md").read_text()
    assert report.startswith("# attnjax tour")
    assert "## Environment" in report and f"| {jax.__version__} / " in report
    assert ("| claim | experiment | rule (pre-registered) | headline: mean [95% CI] | "
            "published | verdict | figures |") in report
    results = json.loads((tmp_path / "results.json").read_text())["experiments"]
    assert [r["name"] for r in results] == list(REGISTRY)
    lines = report.splitlines()
    for entry in results:
        (row,) = [line for line in lines if line.startswith(f"| {entry['claim'][:40]}")]
        assert f"[`{entry['name']}`]({entry['name']}/)" in row
        assert re.search(r"\*\*(claim holds|claim does not hold|mixed)", row), row
        own = json.loads((tmp_path / entry["name"] / "results.json").read_text())
        # Every experiment states its rule; trained ones ran the smoke variant's 2 seeds.
        assert own["rule"] and " ".join(own["rule"].split())[:30] in " ".join(row.split())
        assert own["seeds"] == [] or len(own["seeds"]) == 2, entry["name"]
        if own["seeds"]:
            assert "2 seeds" in row and "of 2 seeds" in own["verdict"], entry["name"]
        for figure in own.get("figures", []):
            assert f"({entry['name']}/{figure})" in row
            assert (tmp_path / entry["name"] / figure).is_file()


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




def test_no_experiment_imports_another_experiment():
    """Shared code lives in attnjax/; an experiment imports only the registry."""
    import ast

    names = set(REGISTRY) | {"tour", "_minilm"}
    for path in sorted((REPO_ROOT / "experiments").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "experiments" and len(parts) > 1 and parts[1] in names:
                    allowed = path.stem == "tour" or (parts[1] == "_minilm")
                    assert allowed, f"{path.name} imports {module}"
