"""Helpers shared by the test modules."""

import json

import jax.numpy as jnp
import pytest

from attnjax import experiment


def tour_run(tour_smoke, name: str):
    """Experiment ``name``'s run in the shared smoke tour (``tour_smoke`` fixture: the tour
    runs every smoke variant once per session); returns ``(config, run_dir, results)`` with
    ``results`` as stored in ``results.json``. Fails with the experiment's traceback if it
    crashed in the tour."""
    workdir, _ = tour_smoke
    run_dir = experiment.RunDir(workdir / name)
    if not run_dir.results_path.exists():
        error = run_dir.path / "error.txt"
        detail = error.read_text() if error.exists() else "no results.json and no error.txt"
        pytest.fail(f"{name} did not finish in the smoke tour:\n{detail}")
    config = experiment.load_config(f"configs/{name}.py:smoke")
    return config, run_dir, json.loads(run_dir.results_path.read_text())


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


def random_qkv(rng, b, t, s, h, hk, d=8, dv=8):
    """float32 ``query [b, t, h, d]``, ``key [b, s, hk, d]``, ``value [b, s, hk, dv]`` drawn
    from ``rng`` (a ``np.random.Generator``)."""
    q = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(b, s, hk, d)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, s, hk, dv)), jnp.float32)
    return q, k, v
