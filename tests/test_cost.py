"""attnjax.cost: pair counts, FLOPs and memory checked against hand arithmetic and brute force."""

import json

import pytest

from attnjax import cli, cost
from attnjax.cost import Levels, attention_cost

SEED = dict(heads=96, head_dim=128, layers=96)  # GPT-3-like: 96 layers x 96 heads, D = 128
T_SEED = 128_000


def brute_force_causal_pairs(t, s):
    """Pairs allowed by attnjax.ops.causal_mask (key j <= query i), counted one by one."""
    return sum(1 for i in range(t) for j in range(s) if j <= i)


def qkvo_bytes(b, t, s, h, hk, d, dv, dtype_bytes):
    return b * (t * h * d + s * hk * d + s * hk * dv + t * h * dv) * dtype_bytes


# --------------------------------------------------------------------------- pairs


def test_seed_example_pairs_per_head_layer_and_model():
    pairs = attention_cost(T_SEED, **SEED).pairs
    assert pairs == Levels(T_SEED**2, 96 * T_SEED**2, 96 * 96 * T_SEED**2)
    assert pairs.per_head == 16_384_000_000


def test_batch_multiplies_the_layer_and_model_counts_not_the_head_count():
    pairs = attention_cost(100, heads=4, head_dim=8, layers=3, batch=5).pairs
    assert pairs == Levels(100 * 100, 5 * 4 * 100 * 100, 3 * 5 * 4 * 100 * 100)


@pytest.mark.parametrize("t", [1, 2, 7, 128])
def test_causal_self_attention_pairs_are_t_times_t_plus_one_over_two(t):
    assert attention_cost(t, heads=1, head_dim=1, causal=True).pairs.per_head == t * (t + 1) // 2


@pytest.mark.parametrize("t, s", [(3, 2), (2, 5), (6, 6), (9, 4), (1, 7)])
def test_causal_pairs_match_the_top_left_causal_mask(t, s):
    result = attention_cost(t, kv_len=s, heads=1, head_dim=1, causal=True)
    assert result.pairs.per_head == brute_force_causal_pairs(t, s)


def test_grouped_query_attention_counts_pairs_per_query_head():
    assert attention_cost(64, heads=8, kv_heads=2, head_dim=4).pairs.per_layer == 8 * 64 * 64


# --------------------------------------------------------------------------- FLOPs


def test_tiny_case_flops_match_hand_count():
    # T=3, S=2, D=4, Dv=2. Q K^T: 3*2*4 = 24 MACs = 48 flops; P V: 3*2*2 = 12 MACs = 24 flops;
    # softmax 5 flops x 6 scores = 30. One head: 102; two heads: 204.
    result = attention_cost(3, kv_len=2, heads=2, head_dim=4, value_dim=2)
    assert result.naive_flops == Levels(102, 204, 204)
    assert result.chunked_flops == Levels(102, 204, 204)


def test_tiny_case_backward_flops_match_hand_count():
    # Backward: dV = P^T dO 24, dP = dO V^T 24, dQ = dS K 48, dK = dS^T Q 48, softmax 3 x 6 = 18:
    # 162, so naive fwd+bwd = 264. Chunked also recomputes Q K^T (48) and the softmax (30).
    result = attention_cost(3, kv_len=2, heads=1, head_dim=4, value_dim=2, backward=True)
    assert result.naive_flops.per_head == 102 + 162
    assert result.chunked_flops.per_head == 102 + 162 + 48 + 30


def test_backward_matmuls_are_twice_forward_naive_and_two_and_a_half_times_chunked():
    d = 128
    forward = 4 * d  # Q K^T and P V, 2 flops per MAC, D = Dv
    assert cost._flops_per_pair(d, d, backward=True, recompute=False) - (
        forward + cost.SOFTMAX_FLOPS + cost.SOFTMAX_BACKWARD_FLOPS) == 2 * forward
    assert cost._flops_per_pair(d, d, backward=True, recompute=True) - (
        forward + 2 * cost.SOFTMAX_FLOPS + cost.SOFTMAX_BACKWARD_FLOPS) == 2.5 * forward


def test_causal_saves_flops_only_for_the_chunked_implementation():
    full = attention_cost(64, heads=2, head_dim=8)
    causal = attention_cost(64, heads=2, head_dim=8, causal=True)
    assert causal.naive_flops == full.naive_flops  # the mask is applied after the matmul
    assert causal.chunked_flops.per_head * 64 == full.chunked_flops.per_head * (64 + 1) // 2


def test_projection_and_mlp_flops_are_24_t_d_model_squared():
    result = attention_cost(10, heads=4, head_dim=8, batch=3, layers=2, include_projections=True)
    d_model = 32
    assert result.d_model == d_model and result.mlp_hidden == 4 * d_model
    assert result.projection_flops.per_layer == 3 * (4 * 10 * d_model**2 * 2
                                                     + 2 * 10 * d_model * 4 * d_model * 2)
    assert result.projection_flops.per_model == 2 * result.projection_flops.per_layer


@pytest.mark.parametrize("causal", [False, True])
def test_attention_outweighs_the_projections_from_the_crossover_length_on(causal):
    kwargs = dict(heads=4, head_dim=16, d_model=64, causal=causal)
    t = attention_cost(8, **kwargs).crossover_seq_len

    def attention_minus_projections(n):
        result = attention_cost(n, **kwargs)
        return result.chunked_flops.per_layer - result.projection_flops.per_layer

    assert attention_minus_projections(t) >= 0 > attention_minus_projections(t - 1)


# --------------------------------------------------------------------------- doubling


def test_doubling_quadruples_the_quadratic_terms_exactly():
    doubling = attention_cost(1000, heads=4, head_dim=16, backward=True).doubling
    assert doubling.pairs == 4.0
    assert doubling.naive_flops == 4.0
    assert doubling.chunked_flops == 4.0
    assert doubling.naive_score_memory == 4.0


def test_causal_doubling_ratio_is_just_under_four():
    t = 1000
    doubling = attention_cost(t, heads=1, head_dim=1, causal=True).doubling
    assert doubling.pairs == pytest.approx((2 * t) * (2 * t + 1) / (t * (t + 1)), rel=1e-15)
    assert 3.99 < doubling.pairs < 4.0


def test_doubling_a_whole_layer_with_projections_costs_less_than_four_times():
    result = attention_cost(T_SEED, **SEED, include_projections=True)
    assert 2.0 < result.doubling.layer_flops < 4.0
    assert attention_cost(T_SEED, **SEED).doubling.layer_flops is None


def test_chunked_memory_grows_linearly_and_naive_memory_quadratically():
    doubling = attention_cost(65_536, heads=8, head_dim=64, chunk_q=128, chunk_k=128).doubling
    assert doubling.chunked_memory == pytest.approx(2.0, abs=0.01)
    assert doubling.naive_memory == pytest.approx(4.0, abs=0.01)


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize("backward, buffers", [(False, 2), (True, 6)])
def test_naive_memory_is_qkvo_plus_score_sized_buffers(backward, buffers):
    b, h, t, s, d = 2, 3, 5, 7, 4
    result = attention_cost(t, kv_len=s, batch=b, heads=h, head_dim=d, backward=backward)
    assert result.naive_score_buffers == buffers
    assert result.naive_score_memory.per_layer == b * h * t * s * 4 * buffers
    qkvo = qkvo_bytes(b, t, s, h, h, d, d, 4) * (2 if backward else 1)
    assert result.naive_memory.per_layer == qkvo + b * h * t * s * 4 * buffers


def test_scores_stay_float32_for_bfloat16_inputs():
    b, h, t, d = 1, 2, 16, 8
    result = attention_cost(t, batch=b, heads=h, head_dim=d, dtype_bytes=2)
    assert result.score_bytes == 4
    assert result.naive_memory.per_layer == qkvo_bytes(b, t, t, h, h, d, d, 2) + 2 * h * t * t * 4


def test_chunked_memory_is_qkvo_logsumexp_and_one_block_per_head():
    b, h, hk, t, d = 2, 4, 2, 4096, 32
    result = attention_cost(t, batch=b, heads=h, kv_heads=hk, head_dim=d, chunk_q=128, chunk_k=256)
    expected = qkvo_bytes(b, t, t, h, hk, d, d, 4) + b * h * t * 4 + b * h * 128 * 256 * 4
    assert result.chunked_memory.per_layer == expected


def test_chunks_are_clipped_to_the_sequence():
    result = attention_cost(8, heads=1, head_dim=2, chunk_q=1024, chunk_k=1024)
    assert result.chunked_memory.per_head == qkvo_bytes(1, 8, 8, 1, 1, 2, 2, 4) + 8 * 4 + 8 * 8 * 4


def test_model_memory_is_one_layer_forward_and_all_residuals_with_backward():
    kwargs = dict(heads=2, head_dim=8, layers=5)
    forward = attention_cost(256, **kwargs)
    assert forward.naive_memory.per_model == forward.naive_memory.per_layer
    training = attention_cost(256, **kwargs, backward=True)
    score = 2 * 256 * 256 * 4
    residual = qkvo_bytes(1, 256, 256, 2, 2, 8, 8, 4) + cost.NAIVE_RESIDUAL_SCORE_BUFFERS * score
    assert training.naive_memory.per_model == 4 * residual + training.naive_memory.per_layer


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(seq_len=0), "seq_len"),
        (dict(seq_len=-5), "seq_len"),
        (dict(seq_len=1.5), "seq_len"),
        (dict(seq_len=True), "seq_len"),
        (dict(heads=0), "heads"),
        (dict(head_dim=0), "head_dim"),
        (dict(layers=0), "layers"),
        (dict(batch=-1), "batch"),
        (dict(kv_len=0), "kv_len"),
        (dict(kv_heads=5), "kv_heads must divide heads"),
        (dict(kv_heads=0), "kv_heads"),
        (dict(value_dim=0), "value_dim"),
        (dict(dtype_bytes=0), "dtype_bytes"),
        (dict(chunk_q=0), "chunk_q"),
        (dict(chunk_k=0), "chunk_k"),
        (dict(d_model=0), "d_model"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    arguments = dict(seq_len=16, heads=8, head_dim=4) | kwargs
    with pytest.raises(ValueError, match=name):
        attention_cost(arguments.pop("seq_len"), **arguments)


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    "formatter, value, text",
    [
        (cost.format_si, 16_384_000_000, "16.4 G"),
        (cost.format_si, 999_700, "1 M"),
        (cost.format_si, 512, "512"),
        (cost.format_words, 1.57e12, "1.57 trillion"),
        (cost.format_sci, 16_384_000_000, "1.64e10"),
        (cost.format_sci, 1024, "1,024"),
        (cost.format_bytes, 2 * T_SEED**2 * 4, "122 GiB"),
        (cost.format_bytes, 2**40, "1 TiB"),
        (cost.format_bytes, 1000 * 2**30, "1000 GiB"),
        (cost.format_bytes, 100, "100 B"),
    ],
)
def test_human_readable_numbers(formatter, value, text):
    assert formatter(value) == text


def test_report_says_the_seed_16_billion_is_the_per_head_count():
    report = " ".join(str(attention_cost(T_SEED, **SEED, include_projections=True)).split())
    assert "1.64e10" in report and "1.57e12" in report and "1.51e14" in report
    assert "16 billion is the count for one head" in report
    assert "96x too small" in report


def test_report_with_one_head_says_the_claim_holds_per_layer():
    report = cost.seed_claim_check(attention_cost(T_SEED, heads=1, head_dim=64))
    assert "16 billion is the per-layer count: the claim holds" in report


# --------------------------------------------------------------------------- command line

SEED_ARGS = ["cost", "--seq-len", "128000", "--heads", "96", "--layers", "96", "--head-dim", "128"]


def test_cli_cost_prints_the_seed_example_without_the_checkout(monkeypatch, capsys):
    def no_checkout():
        raise AssertionError("attnjax cost must not need experiments/")

    monkeypatch.setattr(cli, "_use_checkout", no_checkout)
    assert cli.main(SEED_ARGS) == 0
    out = capsys.readouterr().out
    assert "query-key pairs" in out and "1.64e10 (16.4 G)" in out
    assert "16 billion is the count for one head" in out


def test_cli_cost_json_parses_into_the_dataclass_fields(capsys):
    assert cli.main([*SEED_ARGS, "--json", "--causal", "--dtype", "bfloat16", "--backward"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pairs"]["per_head"] == T_SEED * (T_SEED + 1) // 2
    assert result["dtype_bytes"] == 2 and result["score_bytes"] == 4
    assert result["backward"] and result["causal"]
    assert result["d_model"] == 96 * 128  # projections counted by default on the command line


def test_cli_cost_attention_only_leaves_out_the_projections(capsys):
    assert cli.main([*SEED_ARGS, "--json", "--attention-only"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["d_model"] is None and result["projection_flops"] is None


@pytest.mark.parametrize(
    "args, name",
    [
        (["--seq-len", "0", "--heads", "8", "--head-dim", "4"], "seq_len"),
        (["--seq-len", "16", "--heads", "8", "--head-dim", "4", "--kv-heads", "3"], "kv_heads"),
    ],
)
def test_cli_cost_bad_argument_exits_2_naming_it(args, name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["cost", *args])
    assert exit_info.value.code == 2
    assert name in capsys.readouterr().err


# --------------------------------------------------------------------------- kernel blocks


@pytest.mark.parametrize("t, causal", [(64, False), (300, False), (4096, False), (4096, True),
                                       (100_000, True)])
def test_default_chunks_are_the_chunked_kernels_own_blocks(t, causal):
    from attnjax.ops.chunked import default_blocks

    result = attention_cost(t, heads=2, head_dim=8, causal=causal)
    assert (result.chunk_q, result.chunk_k) == default_blocks(t, t, causal)
    block_q, block_k = default_blocks(t, t, causal)
    qkvo = qkvo_bytes(1, t, t, 2, 2, 8, 8, 4)
    assert result.chunked_memory.per_layer == qkvo + 2 * t * 4 + 2 * block_q * block_k * 4


def test_cli_cost_reports_the_kernels_blocks(capsys):
    assert cli.main(["cost", "--seq-len", "8192", "--heads", "8", "--head-dim", "64",
                     "--causal", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["chunk_q"], result["chunk_k"]) == (256, 512)


# --------------------------------------------------------------------------- benchmark counts


def test_attention_matmul_flops_are_two_matmuls_forward_seven_with_recomputing_backward():
    b, h, t, d = 2, 4, 64, 16
    forward = 2 * (2 * b * h * t * t * d)
    assert cost.attention_matmul_flops(t, heads=h, head_dim=d, batch=b) == forward
    assert cost.attention_matmul_flops(t, heads=h, head_dim=d, batch=b, backward=True) == (
        3.5 * forward)
    assert cost.attention_matmul_flops(t, heads=h, head_dim=d, batch=b, backward=True,
                                       recompute=False) == 3 * forward
    causal = cost.attention_matmul_flops(t, heads=h, head_dim=d, batch=b, causal=True)
    assert causal == 2 * 2 * b * h * (t * (t + 1) // 2) * d
    # The softmax is the only difference from attention_cost's chunked count.
    full = attention_cost(t, heads=h, head_dim=d, batch=b)
    assert full.chunked_flops.per_layer - forward == b * h * t * t * cost.SOFTMAX_FLOPS


def test_naive_score_bytes_are_two_or_six_float32_score_matrices():
    assert cost.naive_score_bytes(128, heads=8) == 2 * 8 * 128 * 128 * 4
    assert cost.naive_score_bytes(128, heads=8, batch=3, backward=True) == 6 * 3 * 8 * 128**2 * 4


def test_recurrent_and_attention_layer_flops():
    assert cost.recurrent_flops("lstm", 10, width=8, batch=2) == 2 * 2 * 10 * 4 * 2 * 64
    assert cost.recurrent_flops("gru", 10, width=8, backward=True) == 3 * 2 * 10 * 3 * 2 * 64
    with pytest.raises(ValueError, match="cell"):
        cost.recurrent_flops("transformer", 10, width=8)
    layer = cost.attention_layer_flops(32, width=16, heads=4, batch=2)
    assert layer == 2 * 2 * 32 * 4 * 16 * 16 + 2 * 2 * 2 * 32 * 32 * 16
    with pytest.raises(ValueError, match="heads must divide width"):
        cost.attention_layer_flops(32, width=16, heads=3)
