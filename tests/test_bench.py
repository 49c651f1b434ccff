"""attnjax.bench: the measurement harness of the benchmarks."""

import time

import numpy as np
import pytest

from attnjax import bench


def test_loglog_slope_recovers_a_known_power_law():
    xs = [256, 512, 1024, 2048]
    assert bench.loglog_slope(xs, [3e-4 * x**2 for x in xs]) == pytest.approx(2.0)
    assert bench.loglog_slope(xs, [5.0 / x for x in xs]) == pytest.approx(-1.0)
    assert bench.loglog_slope([1, 10], [2, 2 * 10**1.5]) == pytest.approx(1.5)


@pytest.mark.parametrize("xs, ys", [([1], [1]), ([1, 2], [1, -1]), ([3, 3], [1, 2]),
                                    ([1, 2, 3], [1, 2])])
def test_loglog_slope_refuses_what_it_cannot_fit(xs, ys):
    with pytest.raises(ValueError):
        bench.loglog_slope(xs, ys)


def test_power_law_fit_reports_its_support_and_needs_two_lengths():
    fit = bench.power_law_fit([(1024, 1.0), (2048, 4.0), (4096, 16.0)])
    assert fit == {"exponent": pytest.approx(2.0), "min_length": 1024, "max_length": 4096,
                   "points": 3}
    assert bench.power_law_fit([(1024, 1.0)]) is None


def test_slope_bootstrap_interval_holds_the_true_exponent_of_noisy_rounds():
    rng = np.random.default_rng(0)
    xs = [256, 512, 1024, 2048, 4096]
    rounds = [list(1e-6 * x**2 * rng.uniform(1.0, 1.1, size=5)) for x in xs]
    fit = bench.slope_bootstrap(xs, rounds, statistic="best")
    lo, hi = fit["ci95"]
    assert lo <= fit["mean"] <= hi and lo < 2.0 < hi and hi - lo < 0.1
    assert fit["points"] == 5
    exact = bench.slope_bootstrap(xs, [[1e-6 * x**2] * 3 for x in xs])
    assert exact["ci95"] == [pytest.approx(2.0), pytest.approx(2.0)]


def test_repeat_summary_bootstraps_over_the_timed_rounds():
    record = bench.repeat_summary([1.0, 2.0, 3.0, 4.0], "mean")
    assert record["per_repeat"] == [1.0, 2.0, 3.0, 4.0] and record["mean"] == 2.5
    lo, hi = record["ci95"]
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert bench.repeat_summary([1.0, 2.0, 3.0], "best")["mean"] == 1.0
    with pytest.raises(ValueError, match="statistic"):
        bench.repeat_summary([1.0, 2.0], "max")


def test_neighbour_load_sees_a_busy_child_process():
    import subprocess
    import sys

    busy = "import time\nt = time.time()\nwhile time.time() - t < 0.8: pass"
    with bench.NeighbourLoad() as load:
        subprocess.run([sys.executable, "-c", busy], check=True, timeout=30)
    # The child spins one core for most of the window: other processes' CPU >= 0.5 cores.
    assert isinstance(load.cores, float) and load.cores >= 0.5
    assert bench.jiffies() > 0


def test_time_calls_keeps_every_round_and_its_best_and_median():
    timed = bench.time_calls(lambda: time.sleep(0.002), repeats=3, min_seconds=0.0)
    assert timed["rounds"] == len(timed["round_seconds"]) == 3
    assert timed["seconds_best"] == min(timed["round_seconds"]) >= 0.002
    assert timed["seconds_best"] <= timed["seconds_median"]
    assert timed["attempts"] == 1 and not timed["disturbed"]
    assert bench.timing({"repeats": 2, "min_seconds": 0.1, "other": 1}) == {
        "repeats": 2, "min_seconds": 0.1}


def test_time_calls_retries_a_disturbed_measurement_and_marks_it():
    timed = bench.time_calls(lambda: None, repeats=1, min_seconds=0.0, min_row_seconds=0.02,
                             max_neighbour_cores=-1.0, max_retries=1)
    assert timed["attempts"] == 2 and timed["disturbed"]


def test_seconds_per_call_repeats_the_call_for_min_seconds():
    calls = []
    seconds = bench.seconds_per_call(lambda: calls.append(time.sleep(0.001)), 0.01)
    assert len(calls) >= 2 and seconds >= 0.001


@pytest.mark.skipif(bench.peak_rss_increment(lambda: None) is None,
                    reason="/proc/self/clear_refs is not writable here")
def test_peak_memory_sees_a_64_mib_allocation():
    increment = bench.peak_rss_increment(lambda: np.ones(8 * 2**20).sum())  # 64 MiB
    assert 60 * 2**20 <= increment <= 80 * 2**20


def test_xla_memory_reads_the_buffer_sizes_of_a_compiled_program():
    import jax
    import jax.numpy as jnp

    x = jnp.ones((256, 256), jnp.float32)
    compiled = jax.jit(lambda a: a @ a + 1).lower(x).compile()
    sizes = bench.xla_memory(compiled)
    assert sizes["argument_bytes"] == 256 * 256 * 4 and sizes["output_bytes"] == 256 * 256 * 4
    assert sizes["total_bytes"] >= sizes["argument_bytes"]
    assert bench.xla_memory(object()) is None


def test_environment_and_thread_count_describe_this_machine():
    env = bench.environment()
    assert env["jax_cpu_threads"] >= 1 and env["schedulable_cores"] >= 1
    assert env["backend"] and env["jax"] and len(env["load_average"]) == 3


def test_matmul_ceiling_is_a_positive_rate():
    ceiling = bench.matmul_ceiling(64, repeats=1, min_seconds=0.0)
    assert ceiling["size"] == 64 and ceiling["gflop_per_second"] > 0
