"""Test setup: 8 virtual CPU devices (for pmap/sharding tests) and hypothesis profiles.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before anything
touches a device; conftest.py is imported before the test modules.
"""

import os
import tempfile

# 8 virtual CPU devices; and XLA's LLVM backend at -O0: the suite is dominated by compiling
# many small programs (a third faster here), while the HLO optimisations that decide the
# numbers (fusion, layout) are unchanged. The tour and the benchmarks run at the default.
for _flag in ("--xla_force_host_platform_device_count=8", "--xla_backend_optimization_level=0"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# One persistent XLA compilation cache per test run, shared by the xdist workers and by the
# subprocesses the tests start (they inherit the environment): a program compiled by one
# (the resume job's train step, the SmolLM2 forward) is read back by the others. Fresh for
# every run (keyed by the run's id), so it never serves a stale program.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"attnjax-test-xla-cache-{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

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


# Fixtures that train a model or load a real one (SmolLM2-135M: ~6 s, then compiles).
SMOKE_FIXTURES = {"smoke", "smoke_run", "straight_run", "smollm2"}
# Tests that took >= 3 s (setup + call) in `pytest --durations=120` of the full suite on this
# 2-core CPU (2026-12-02): left out of the fast tier too.
SLOW_TESTS = {
    ("test_analysis", "test_capture_attention_returns_every_layer_in_order_under_jit"),
    ("test_chunked", "test_causal_blocks_above_the_diagonal_are_skipped_not_masked"),
    ("test_chunked", "test_matches_reference_forward_and_backward"),
    ("test_chunked", "test_random_shapes_and_blocks"),
    ("test_chunked", "test_transforms_vmap_and_grad_of_jit"),
    ("test_coreference", "test_classifier_training_is_deterministic_and_learns_recall"),
    ("test_coreference", "test_fit_classifier_stops_at_the_first_interval_reaching_the_accuracy"),
    ("test_coreference", "test_input_gradient_norm_is_the_directional_derivative"),
    ("test_coreference", "test_position_classifier_reads_the_requested_position_and_checks_it"),
    ("test_coreference", "test_rnn_gradient_never_reaches_tokens_after_the_readout"),
    ("test_exp_coreference", "test_smoke_results_meet_the_contract_with_one_value_per_seed"),
    ("test_exp_explanation", "test_smoke_results_follow_the_contract"),
    ("test_exp_explanation", "test_uniform_attention_model_equals_the_model_with_every_map_set_uniform"),  # noqa: E501
    ("test_exp_fading_memory", "test_smoke_results_meet_the_contract_with_one_value_per_seed"),
    ("test_exp_heads", "test_smoke_results_follow_the_contract"),
    ("test_exp_induction", "test_rerunning_a_finished_run_keeps_its_history_and_numbers"),
    ("test_exp_induction", "test_smoke_results_meet_the_contract"),
    ("test_exp_parallelism", "test_parallelism_smoke_times_both_layers_at_every_length"),
    ("test_exp_pretrained", "test_smoke_results_keep_the_contract_for_a_pretrained_model"),
    ("test_exp_scaling", "test_scaling_smoke_measures_every_row_against_jax_nn"),
    ("test_exp_sqrt_dk", "test_smoke_results_meet_the_contract"),
    ("test_exp_translation", "test_results_follow_the_contract_with_one_value_per_seed"),
    ("test_experiments", "test_tour_smoke_writes_a_report_with_a_sqrt_dk_row"),
    ("test_flash", "test_grouped_and_multi_query_attention_match_reference"),
    ("test_head_view", "test_head_view_in_headless_chromium_switches_heads_and_follows_the_hover"),
    ("test_interpretability", "test_attributions_of_a_real_encoder_through_the_embedding_hook"),
    ("test_interpretability", "test_head_outputs_are_captured_per_module"),
    ("test_interpretability", "test_mean_ablation_with_this_inputs_means_of_a_single_token_changes_nothing"),  # noqa: E501
    ("test_invariances", "test_encoder_is_order_blind_without_positions_and_order_aware_with_them"),
    ("test_invariances", "test_masked_extra_keys_do_not_change_the_output"),
    ("test_invariances", "test_padding_does_not_change_unpadded_encoder_outputs"),
    ("test_invariances", "test_self_attention_without_positions_is_permutation_equivariant"),
    ("test_nn", "test_encoder_decoder_shapes_and_captured_attention"),
    ("test_nn", "test_lm_kv_cache_decoding_equals_full_forward_token_by_token"),
    ("test_ops_attention", "test_dropout_is_inverted_and_deterministic_given_the_key"),
    ("test_parallel", "test_8_devices_give_the_loss_curve_of_one"),
    ("test_parallel", "test_sharded_training_resumes_from_a_checkpoint"),
    ("test_parallel", "test_two_processes_of_4_devices_give_the_loss_curve_of_one"),
    ("test_pretrained", "test_batched_padded_input_gives_the_one_by_one_embeddings"),
    ("test_pretrained", "test_last_hidden_states_and_every_attention_probability_match"),
    ("test_readme", "test_readme_python_examples_run"),
    ("test_recurrent", "test_extra_source_padding_does_not_change_logits"),
    ("test_recurrent", "test_gru_with_additive_attention_learns_to_reverse_held_out_sequences"),
    ("test_recurrent", "test_step_decoding_gives_the_teacher_forced_logits"),
    ("test_ring", "test_ring_attention_equals_single_device_forward_and_gradients"),
    ("test_ring", "test_ring_attention_tiles_within_a_device_and_pads_ragged_tiles"),
    ("test_train", "test_beam_search_with_one_beam_is_greedy_and_wider_beams_score_no_worse"),
    ("test_train", "test_fit_learns_to_copy_and_decoding_recovers_the_source"),
    ("test_train", "test_greedy_kv_cache_decoding_equals_argmax_of_full_forward_passes"),
    ("test_train", "test_interrupted_run_resumes_to_identical_parameters_and_complete_metrics"),
    ("test_flash_structured", "test_random_structures_match_the_dense_reference_forward_backward_and_residual"),  # noqa: E501
    ("test_flash_structured", "test_empty_tiles_are_skipped_not_masked"),
    ("test_flash_structured", "test_schedules_visit_exactly_the_non_empty_tiles_of_each_example"),
    ("test_flash_structured", "test_fully_masked_rows_give_zero_output_and_zero_finite_grads"),
    ("test_nn_structured", "test_packed_windowed_alibi_lm_runs_under_rank_promotion_raise"),
    ("test_nn_structured", "test_packed_source_target_pairs_give_the_logits_of_each_pair_alone"),
    ("test_nn_structured", "test_alibi_goes_in_as_a_score_fn_and_equals_the_dense_bias"),
    ("test_nn_structured", "test_lm_kv_cache_decoding_with_a_sliding_window_equals_the_full_forward"),  # noqa: E501
    ("test_nn_structured", "test_packed_documents_give_the_logits_of_each_document_alone"),
    ("test_nn_structured", "test_inputs_k_and_inputs_v_equal_flax_with_the_same_params"),
    ("test_bench_structured", "test_structured_masks_benchmark_reports_every_group_ratio_bar_and_memory_row"),  # noqa: E501
    ("test_structured", "test_random_structures_match_the_dense_reference_forward_and_backward"),  # noqa: E501
    ("test_structured", "test_structures_work_under_jit_vmap_and_strict_modes"),
    ("test_structured", "test_ring_attention_on_8_devices_matches_the_dense_reference_forward_and_backward"),  # noqa: E501
    ("test_structured", "test_ring_score_fn_closure_gradient_is_summed_over_the_devices"),
    ("test_structured", "test_ring_attention_shard_takes_per_device_segment_ids_inside_shard_map"),  # noqa: E501
    ("test_structured", "test_schedule_skips_only_empty_blocks_and_calls_full_only_full_ones"),
    ("test_structured", "test_score_fn_closure_gets_its_gradient_through_the_recomputation"),
    ("test_trainer", "test_a_learning_rate_sweep_is_one_program_whose_members_match_single_rate_runs"),  # noqa: E501
    ("test_trainer", "test_the_step_donates_its_state_unless_asked_not_to"),
    ("test_trainer", "test_vmapped_seeds_follow_the_loss_curves_of_separate_runs"),
    ("test_transforms", "test_grad_through_jit_and_vmap_matches_plain_grad"),
    ("test_transforms", "test_transformer_lm_grad_under_pmap_matches_single_device"),
}


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
        name = (item.module.__name__.rpartition(".")[2], getattr(item, "originalname", item.name))
        if tour or SMOKE_FIXTURES & set(getattr(item, "fixturenames", ())) or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
