"""Helpers shared by the test modules."""

from attnjax import experiment


def run_smoke(name: str, run_fn, tmp_path_factory, variant: str = "smoke"):
    """Runs experiment ``name``'s smoke variant into a fresh folder, as the tour does;
    returns ``(config, run_dir, results)``."""
    config = experiment.load_config(f"configs/{name}.py:{variant}")
    run_dir = experiment.RunDir.create(name, tmp_path_factory.mktemp(name))
    return config, run_dir, experiment.run_experiment(name, run_fn, config, run_dir)


def leaves(obj):
    """Every number in a nested JSON object."""
    if isinstance(obj, dict):
        for value in obj.values():
            yield from leaves(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from leaves(value)
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        yield obj
