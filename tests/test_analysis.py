"""Attention capture, alignment scoring (AER) and heatmaps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import analysis, nn, viz


def test_alignment_error_rate_extremes_and_a_partial_match():
    gold = {(0, 0), (1, 1), (2, 2)}
    assert analysis.alignment_error_rate(gold, gold) == 0.0
    assert analysis.alignment_error_rate({(0, 1)}, gold) == 1.0
    # 2 of 3 predicted links are gold: 1 - 2*2/(3+3).
    assert analysis.alignment_error_rate({(0, 0), (1, 1), (0, 2)}, gold) == pytest.approx(1 / 3)


def test_argmax_links_ignore_eos_and_padding_columns():
    weights = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.0, 0.0, 1.0]])
    # Column 2 is the source EOS and row 2 a padded target: both are cut off.
    assert analysis.argmax_links(weights, source_length=2, target_length=2) == {(1, 0), (0, 1)}


def test_diagonal_links_are_monotonic_and_cover_both_ends():
    assert analysis.diagonal_links(4, 4) == {(0, 0), (1, 1), (2, 2), (3, 3)}
    links = sorted(analysis.diagonal_links(3, 5), key=lambda link: link[1])
    assert links[0] == (0, 0) and links[-1] == (2, 4)
    assert all(a[0] <= b[0] for a, b in zip(links, links[1:], strict=False))


def test_head_aers_find_the_head_that_attends_along_the_gold_links():
    golds = [{(1, 0), (0, 1)}, {(0, 0), (2, 1), (1, 2)}]
    weights = np.full((2, 2, 3, 3, 4), 0.25)  # [L, N, H, T, S]
    for i, gold in enumerate(golds):
        for s, t in gold:
            weights[1, i, 2, t] = 0.0
            weights[1, i, 2, t, s] = 1.0
    aers = analysis.head_aers(weights, golds, source_lengths=[2, 3], target_lengths=[2, 3])
    assert aers.shape == (2, 3)
    assert aers[1, 2] == 0.0
    assert np.unravel_index(np.argmin(aers), aers.shape) == (1, 2)
    with pytest.raises(ValueError, match="2 sentences"):
        analysis.head_aers(weights, golds[:1], [2], [2])


def test_capture_attention_returns_every_layer_in_order_under_jit():
    cfg = nn.TransformerConfig(vocab_size=11, model_dim=16, num_heads=2, num_layers=3,
                               mlp_dim=32, dropout_rate=0.0)
    model = nn.EncoderDecoder(cfg)
    source, target = jnp.array([[3, 4, 5, 0]]), jnp.array([[1, 6, 7]])
    params = model.init(jax.random.key(0), source, target)
    logits, maps = jax.jit(lambda p: analysis.capture_attention(model, p, source, target))(params)
    np.testing.assert_allclose(logits, model.apply(params, source, target), atol=1e-6)
    assert sorted(maps) == sorted(
        [f"encoder/layer_{i}/self_attention" for i in range(3)]
        + [f"decoder/layer_{i}/{k}" for i in range(3) for k in ("self_attention",
                                                                  "cross_attention")]
    )
    cross = analysis.stack_layers(maps, "cross_attention")
    assert cross.shape == (3, 1, 2, 3, 4)
    np.testing.assert_array_equal(cross[1], maps["decoder/layer_1/cross_attention"])


def test_stack_layers_orders_layer_numbers_naturally():
    maps = {f"decoder/layer_{i}/cross_attention": np.full((1,), i) for i in (10, 2, 1)}
    np.testing.assert_array_equal(analysis.stack_layers(maps, "cross_attention")[:, 0],
                                  [1, 2, 10])
    with pytest.raises(ValueError, match="no attention map"):
        analysis.stack_layers(maps, "self_attention")


def test_heatmap_grid_writes_a_png_and_checks_shapes(tmp_path):
    weights = np.eye(3)
    path = viz.save_attention_grid(
        tmp_path / "maps.png", [(weights, ["a", "b", "c"], ["x", "y", "z"])] * 2,
        titles=["one", "two"], golds=[weights > 0, None],
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"`weights` must be \[T=2, S=3\]"):
        viz.plot_attention(weights, ["a", "b"], ["x", "y", "z"])
