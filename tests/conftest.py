"""Test setup: 8 virtual CPU devices (for pmap/sharding tests) and hypothesis profiles.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before anything
touches a device; conftest.py is imported before the test modules.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Every new shape is a new XLA compilation, so examples are few and deadlines off.
settings.register_profile(
    "attnjax",
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "attnjax"))

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tour_smoke(tmp_path_factory):
    """``runs/tour``-style folder of one ``tour --smoke`` run, shared by every test that
    checks an experiment's smoke output (each experiment runs once per session)."""
    from experiments import tour

    workdir = tmp_path_factory.mktemp("tour")
    status = tour.main(["--smoke", "--workdir", str(workdir)])
    return workdir, status


SMOKE_FIXTURES = {"smoke", "smoke_run", "straight_run"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the markers
def pytest_collection_modifyitems(config, items):
    """Groups for ``pytest -n 2 --dist loadgroup`` (pytest-xdist): every test that reads the
    shared ``tour_smoke`` run goes to one worker, so the tour runs once; the other tests
    are grouped by file, so module fixtures are built once. Without xdist the markers are
    inert. Tests reading the smoke tour are also marked ``slow`` (``-m "not slow"`` is the
    fast tier)."""
    for item in items:
        tour = "tour_smoke" in getattr(item, "fixturenames", ())
        group = "tour" if tour else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))
        # The shared smoke tour and each experiment's smoke-run fixture train models: not
        # in the fast tier.
        if tour or SMOKE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
