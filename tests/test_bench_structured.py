"""benchmarks/structured_masks.py: its whole code path on tiny shapes (fields, not timings)."""

import json

from benchmarks import structured_masks


def test_structured_masks_benchmark_reports_every_group_ratio_bar_and_memory_row(tmp_path):
    result = structured_masks.main([
        "--length", "256", "--doc-length", "64", "--window", "64",
        "--memory-fwdbwd-length", "512", "--memory-fwd-length", "1024",
        "--rounds", "2", "--min-seconds", "0", "--peer", "", "--workdir", str(tmp_path),
    ])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "table.md").read_text().startswith("| group | variant |")
    assert saved["verdicts"] == result["verdicts"]
    assert saved["window_convention"].startswith("local_window_size=(63, 0)")

    window = {v["name"]: v for v in saved["sliding_window"]["variants"]}
    assert set(window) == {"window", "causal", "window_2t"}
    assert window["window_2t"]["t"] == 512
    docs = {v["name"]: v for v in saved["documents"]["variants"]}
    assert {"docs", "docs_dense", "docs_causal", "docs_causal_dense",
            "docs_causal_dense_is_causal"} <= set(docs)
    for variant in [*window.values(), *docs.values()]:
        assert len(variant["round_seconds"]) == len(variant["neighbour_cores"]) == 2
        assert variant["mode"] == "fwd+bwd" and variant["largest_buffer"]["elements"] > 0
    # The dense mask gives the structured gradients (the two describe one mask).
    assert docs["docs_dense"]["max_abs_grad_diff_vs_structured"] < 1e-4
    assert docs["docs_causal_dense"]["max_abs_grad_diff_vs_structured"] < 1e-4
    assert [r["order"][0] for r in saved["documents"]["rounds"]] == ["docs", docs_last(saved)]
    assert all(len(r["loadavg_1m"]) == 2 for r in saved["sliding_window"]["rounds"])

    ratios = {**saved["sliding_window"]["ratios"], **saved["documents"]["ratios"]}
    for name in structured_masks.BARS:
        assert len(ratios[name]["per_round"]) == 2 and ratios[name]["median"] > 0
        assert isinstance(saved["verdicts"][name]["met"], bool)

    rows = {row["mode"]: row for row in saved["memory"]["rows"]}
    assert set(rows) == {"fwdbwd", "fwd"} and rows["fwd"]["t"] == 1024
    for row in rows.values():
        assert row["peak_rss_bytes"] >= row["baseline_rss_bytes"] > 0
        assert row["peak_vmhwm_bytes"] >= row["baseline_rss_bytes"]
        assert row["xla_memory"]["temp_bytes"] >= 0
    assert "peak_rss_fwdbwd_t512" in saved["verdicts"]
    assert saved["flex_forward_skipped"] == "not asked for"


def docs_last(saved):
    return saved["documents"]["variants"][-1]["name"]
