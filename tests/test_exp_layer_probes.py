"""experiments/layer_probes: Tenney's center of gravity, the linear probe, the item
bootstrap, the sense silhouette and the pre-registered rule on synthetic numbers (no model,
no ../shared), and the smoke run from the shared smoke tour where all-MiniLM-L6-v2, UD EWT
and the WSC collection are present: the results contract, and a verdict that recomputes
from the stored numbers."""

import math

import ml_collections
import numpy as np
import pytest

from attnjax import experiment, pretrained
from attnjax.data import conllu, wsc
from experiments import layer_probes as lp
from tests.helpers import tour_run

needs_minilm_and_data = pytest.mark.skipif(
    not pretrained.minilm_available() or not conllu.ud_ewt_path("dev").is_file()
    or not wsc.DEFAULT_PATH.is_file(),
    reason="needs all-MiniLM-L6-v2, ../shared/data/ud_english_ewt and ../shared/data/wsc")


def smoke_config():
    return experiment.load_config("configs/layer_probes.py:smoke")


# --------------------------------------------------------------------------- center of gravity


@pytest.mark.parametrize(("scores", "expected"), [
    ([0.0, 1.0, 1.0, 1.0], 1.0),        # all the gain at layer 1
    ([0.0, 0.0, 0.0, 1.0], 3.0),        # all at layer 3
    ([0.0, 0.5, 1.0], 1.5),             # half at 1, half at 2
    ([0.2, 0.4, 0.4, 0.8], (1 * 0.2 + 3 * 0.4) / 0.6),
])
def test_center_of_gravity_matches_tenneys_formula_by_hand(scores, expected):
    assert lp.center_of_gravity(scores) == pytest.approx(expected, rel=1e-12)


def test_center_of_gravity_uses_the_running_maximum_so_a_dip_adds_no_negative_mass():
    dip = [0.0, 1.0, 0.5, 1.0]
    assert lp.center_of_gravity(dip) == pytest.approx(1.0)
    # Raw differences: (1 * 1 - 2 * 0.5 + 3 * 0.5) / 1.
    assert lp.center_of_gravity(dip, cumulative=False) == pytest.approx(1.5)


def test_center_of_gravity_is_undefined_without_gain_and_vectorises():
    assert math.isnan(lp.center_of_gravity([0.5, 0.5, 0.4]))
    batch = lp.center_of_gravity(np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(batch[:2], [1.0, 2.0])
    assert math.isnan(batch[2])
    with pytest.raises(ValueError, match=r"\[\.\.\., L \+ 1\]"):
        lp.center_of_gravity([1.0])


def test_peak_layer_breaks_ties_towards_the_lower_layer():
    np.testing.assert_array_equal(lp.peak_layer([[0.1, 0.9, 0.9, 0.2], [3, 2, 1, 0]]), [1, 0])


# --------------------------------------------------------------------------- the probe


def _clusters(n=300, d=4, c=3, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = 3.0 * np.eye(c, d)
    y = rng.integers(0, c, n)
    return (centers[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


def _objective_gradient(probe, x, y, l2):
    """float64 NumPy gradient of mean cross-entropy + l2 ||W||^2 in standardised space."""
    z = ((x - probe.mean) / probe.scale).astype(np.float64)
    w, b = probe.weights.astype(np.float64), probe.bias.astype(np.float64)
    logits = z @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return z.T @ p / len(y) + 2 * l2 * w, p.mean(0)


def test_probe_separates_planted_classes_and_stops_at_the_optimum():
    x, y = _clusters()
    probe = lp.fit_probe(x, y, 3, l2=1e-2, max_steps=200, tolerance=1e-6)
    assert np.mean(probe.predict(x) == y) == 1.0
    grad_w, grad_b = _objective_gradient(probe, x, y, 1e-2)
    assert np.abs(grad_w).max() < 1e-4 and np.abs(grad_b).max() < 1e-4
    assert probe.steps < 200 and probe.grad_norm < 1e-5


def test_probe_is_deterministic_and_l2_shrinks_its_weights():
    x, y = _clusters(spread=1.5, seed=1)
    a = lp.fit_probe(x, y, 3, l2=1e-3, max_steps=100)
    b = lp.fit_probe(x, y, 3, l2=1e-3, max_steps=100)
    np.testing.assert_array_equal(a.weights, b.weights)
    strong = lp.fit_probe(x, y, 3, l2=1.0, max_steps=100)
    assert np.linalg.norm(strong.weights) < 0.5 * np.linalg.norm(a.weights)


def test_probe_rejects_labels_outside_the_classes():
    x, y = _clusters(n=10)
    with pytest.raises(ValueError, match=r"integers in \[0, 2\)"):
        lp.fit_probe(x, y + 1, 2, l2=1e-3, max_steps=5)
    with pytest.raises(ValueError, match="features"):
        lp.fit_probe(x[:, 0], y, 3, l2=1e-3, max_steps=5)


def test_probe_property_counts_per_sentence_and_reports_the_majority_baseline():
    # Layer 0 carries no label information, layer 1 carries it exactly.
    rng = np.random.default_rng(0)
    labels = np.array(["NOUN"] * 30 + ["VERB"] * 20 + ["DET"] * 10)
    train_y, test_y = labels, labels[::-1].copy()
    onehot = {"NOUN": [1, 0, 0], "VERB": [0, 1, 0], "DET": [0, 0, 1]}

    def features(y):
        informative = np.array([onehot[t] for t in y], np.float32)
        noise = rng.normal(size=(len(y), 3)).astype(np.float32)
        return lambda layer: informative if layer == 1 else noise

    config = ml_collections.ConfigDict({"probe": {"l2": 1e-3, "max_steps": 100,
                                                  "tolerance": 1e-6}})
    sentence = np.repeat(np.arange(6), 10)
    out = lp.probe_property("pos", 2, features(train_y), train_y, features(test_y), test_y,
                            sentence, 6, config)
    np.testing.assert_array_equal(out["denominators"], np.full(6, 10.0))
    np.testing.assert_array_equal(out["numerators"][:, 1], np.full(6, 10.0))
    assert out["majority_class"] == "NOUN" and out["majority"]["mean"] == pytest.approx(0.5)
    assert out["classes"] == 3 and len(out["fits"]) == 2


# --------------------------------------------------------------------------- bootstrap


def test_layer_bootstrap_pairs_items_across_calls_with_the_same_seed():
    rng = np.random.default_rng(0)
    a, b = rng.random((40, 3)), rng.random((40, 3))
    den = rng.integers(1, 5, 40).astype(float)
    draws_a = lp.layer_bootstrap(a * den[:, None], den, resamples=300, seed=7, chunk=64)
    index = np.random.default_rng(7).integers(0, 40, size=(64, 40))
    np.testing.assert_allclose(draws_a[0], (a * den[:, None])[index[0]].sum(0)
                               / den[index[0]].sum())
    draws_b = lp.layer_bootstrap(b, None, resamples=300, seed=7, chunk=64)
    np.testing.assert_allclose(draws_b[0], b[index[0]].mean(0))
    assert draws_a.shape == (300, 3)
    np.testing.assert_allclose(draws_b.mean(0), b.mean(0), atol=0.03)


def test_sense_silhouette_by_hand_on_planted_clusters():
    vectors = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    senses = np.array([0, 0, 1, 1])
    s = lp.sense_silhouettes(vectors, senses)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    d = 1 - unit @ unit.T
    a, b = d[0, 1], d[0, 2:].mean()
    assert s[0] == pytest.approx((b - a) / max(a, b)) and np.all(s > 0.9)
    assert np.all(lp.sense_silhouettes(vectors, np.array([0, 1, 0, 1])) < 0)


# --------------------------------------------------------------------------- the rule


def _curve(onset, *, items=80, levels=7, low=0.5, high=0.9, seed=0):
    """Per-item scores ``[items, levels]`` that step from ``low`` to ``high`` at layer
    ``onset`` (None: flat at ``low``), with a little item noise."""
    rng = np.random.default_rng(seed)
    step = np.zeros(levels) if onset is None else (np.arange(levels) >= onset).astype(float)
    return np.clip(low + (high - low) * step + 0.02 * rng.normal(size=(items, levels)), 0, 1)


def synthetic_numbers(onsets: dict, config) -> dict:
    """Numbers as ``measure`` stores them, from curves stepping at the given layers."""
    den = np.full(80, 10.0)
    records = {
        "pos": {"numerators": _curve(onsets["pos"], seed=1) * den[:, None], "denominators": den},
        "deps": {"numerators": _curve(onsets["deps"], seed=2) * den[:, None],
                 "denominators": den},
        "coreference": {"numerators": _curve(onsets["coreference"], seed=3),
                        "denominators": None},
        "polysemy": {"numerators": _curve(onsets["polysemy"], low=0.0, seed=4),
                     "denominators": None},
    }
    chance = {"pos": 0.2, "deps": 0.2, "coreference": 0.5, "polysemy": 0.0}
    props, expected = {}, {}
    for name, seed in zip(lp.PROPERTIES, (0, 0, 1, 2), strict=True):
        props[name], expected[name] = lp.summarise(name, records[name], chance[name], "test",
                                                   config, seed)
    for name in ("pos", "deps"):
        props[name]["majority"] = {"mean": 0.2, "ci95": [0.18, 0.22]}
    props["coreference"]["pairs"] = 80
    comparisons = [{"earlier": a, "later": b, "difference": lp.compare(expected[a], expected[b])}
                   for a, b in (*lp.COMPARISONS, ("pos", "deps"))]
    return {"num_layers": 6, "data": {"test_sentences": 80}, "properties": props,
            "comparisons": comparisons}


def test_rule_holds_for_the_seeds_order_and_not_for_its_reverse():
    config = smoke_config()
    ordered = lp.verdict(synthetic_numbers(
        {"pos": 1, "deps": 2, "coreference": 4, "polysemy": 6}, config), config)
    assert ordered["verdict"].startswith("claim holds: 5 of 5")
    reverse = lp.verdict(synthetic_numbers(
        {"pos": 6, "deps": 5, "coreference": 3, "polysemy": 1}, config), config)
    assert reverse["verdict"].startswith("claim does not hold here: 0 of 5")
    assert [j["outcome"] for j in reverse["judged"]] == ["reversed"] * 5


def test_rule_is_mixed_when_coreference_is_at_chance_at_every_layer():
    config = smoke_config()
    numbers = synthetic_numbers({"pos": 1, "deps": 1, "coreference": None, "polysemy": 5},
                                config)
    assert not lp.located(numbers["properties"]["coreference"])
    result = lp.verdict(numbers, config)
    outcomes = {(j["earlier"], j["later"]): j["outcome"] for j in result["judged"]}
    assert outcomes[("pos", "polysemy")] == outcomes[("deps", "polysemy")] == "confirmed"
    assert outcomes[("pos", "coreference")] == outcomes[("coreference", "polysemy")] == \
        "unlocated"
    assert result["verdict"].startswith("mixed: 2 of 5")


def test_rule_counts_a_shared_layer_as_a_tie_not_a_confirmation():
    config = smoke_config()
    numbers = synthetic_numbers({"pos": 3, "deps": 3, "coreference": 3, "polysemy": 3}, config)
    result = lp.verdict(numbers, config)
    assert {j["outcome"] for j in result["judged"]} == {"tie"}
    assert result["verdict"].startswith("claim does not hold here: 0 of 5")


# --------------------------------------------------------------------------- smoke run


@pytest.fixture(scope="module")
def smoke(tour_smoke):
    if not pretrained.minilm_available():
        pytest.skip(f"all-MiniLM-L6-v2 not installed ({pretrained.MINILM_INSTALL})")
    return tour_run(tour_smoke, "layer_probes")


@needs_minilm_and_data
def test_smoke_results_keep_the_contract(smoke):
    config, run_dir, results = smoke
    experiment.check_results("layer_probes", results, run_dir)
    assert results["seeds"] == [] and results["rule"] == lp.rule(config)
    assert "{" not in results["rule"]
    for key, metric in results["metrics"].items():
        assert "mean" in metric and "ci95" in metric, key
    for name in lp.PROPERTIES:
        layers = results["properties"][name]["layers"]
        assert len(layers) == results["num_layers"] + 1 == 7
        for record in layers:
            lo, hi = record["ci95"]
            assert lo <= record["mean"] <= hi
    for figure in results["figures"]:
        assert (run_dir.path / figure).read_bytes()[:4] == b"\x89PNG"
    assert results["properties"]["coreference"]["source"]["first_schemas"] == 273


@needs_minilm_and_data
def test_smoke_probes_beat_the_majority_baseline_and_layer0_is_flip_blind(smoke):
    _, _, results = smoke
    props = results["properties"]
    for name in ("pos", "deps"):
        assert max(props[name]["scores"]) > props[name]["majority"]["mean"] + 0.2
    # Layer 0 (embeddings) reads no context: each twin pair scores exactly 1/2.
    assert props["coreference"]["layers"][0]["mean"] == pytest.approx(0.5)


@needs_minilm_and_data
def test_smoke_verdict_recomputes_from_the_stored_numbers(smoke):
    config, _, results = smoke
    again = lp.verdict(results, config)
    assert again["verdict"] == results["verdict"]
    assert again["measured"] == results["measured"]
    assert results["verdict"].startswith(experiment.VERDICTS)
