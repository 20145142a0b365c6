"""The benchmark's pure code: statistics, targets, and the Markdown/JSON report."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import (
    Metric,
    Report,
    Target,
    evaluate,
    evaluate_all,
    fmt_number,
    render_markdown,
    report_to_json,
)
from benchmarks.stats import mb_per_s, percentile, ratio, scaled, summarize


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile([7.0], 99) == 7.0


def test_percentile_does_not_care_about_order() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


@pytest.mark.parametrize("bad", [-1.0, 100.5])
def test_percentile_rejects_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], bad)


def test_percentile_and_summary_reject_no_values() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        summarize([])


def test_summary() -> None:
    s = summarize(list(range(1, 101)))
    assert (s.n, s.min, s.max, s.mean) == (100, 1.0, 100.0, 50.5)
    assert s.p50 == pytest.approx(50.5)
    assert s.p95 == pytest.approx(95.05)
    assert s.p99 == pytest.approx(99.01)


def test_units_and_ratios() -> None:
    assert scaled([0.001, 0.5], 1000) == [1.0, 500.0]
    assert mb_per_s(200_000_000, 2.0) == 100.0
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None
    with pytest.raises(ValueError):
        mb_per_s(1, 0.0)


def latency_row(key: str, values: list[float], **extra: object) -> Metric:
    metric = Metric(key=key, section="S", label=key, unit="ms", summary=summarize(values))
    for name, value in extra.items():
        setattr(metric, name, value)
    return metric


def test_plain_targets_pass_and_miss() -> None:
    rows = {"a": latency_row("a", [8.0, 9.0, 10.0]), "t": Metric("t", "S", "t", "MB/s", value=150.0)}
    assert evaluate(Target("a fast", "a", 10, at_most=True), rows).status == "PASS"
    assert evaluate(Target("a faster", "a", 8, at_most=True), rows).status == "MISS"
    assert evaluate(Target("throughput", "t", 200, at_most=False), rows).status == "MISS"
    assert evaluate(Target("throughput", "t", 100, at_most=False), rows).status == "PASS"


def test_ratio_and_speedup_targets() -> None:
    rows = {
        "ws": latency_row("ws", [10.0]),
        "fork": latency_row("fork", [2.0], short="fork+exec"),
        "podman": latency_row("podman", [250.0], short="podman exec"),
    }
    slower = evaluate(Target("vs fork", "ws", 2, at_most=True, baseline="fork"), rows)
    assert slower.status == "MISS"
    assert slower.measured.startswith("5.00×")
    faster = evaluate(Target("vs podman", "ws", 10, at_most=False, baseline="podman", speedup=True), rows)
    assert faster.status == "PASS"
    assert faster.measured.startswith("25.0×")


def test_missing_measurements_are_not_applicable_with_the_reason() -> None:
    rows = {
        "ws": latency_row("ws", [10.0]),
        "podman": Metric("podman", "S", "podman", "ms", error="podman is not installed"),
    }
    missing = evaluate(Target("x", "nope", 1, at_most=True), rows)
    assert (missing.status, missing.reason) == ("N/A", "not measured")
    no_base = evaluate(Target("x", "ws", 10, at_most=False, baseline="podman", speedup=True), rows)
    assert (no_base.status, no_base.reason) == ("N/A", "podman is not installed")


def test_fmt_number_keeps_three_significant_digits_or_so() -> None:
    assert fmt_number(1234.5) == "1,234"
    assert fmt_number(12.345) == "12.3"
    assert fmt_number(1.2345) == "1.23"
    assert fmt_number(0.012345) == "0.012"


def sample_report() -> Report:
    metrics = [
        latency_row("run", [10.0, 11.0, 30.0], baselines=("fork", "podman")),
        latency_row("fork", [2.0, 2.5, 3.0], short="fork+exec", section="Baselines"),
        Metric("podman", "Baselines", "podman exec", "ms", short="podman exec", error="not installed"),
        Metric("stream", "S", "stream | pipe", "MB/s", value=120.0, note="a note"),
    ]
    targets = evaluate_all([Target("run vs fork", "run", 2, at_most=True, baseline="fork")], metrics)
    profile = {
        "server-run": {
            "title": "Server",
            "per_op_label": "ms per run",
            "rows": [
                {"category": "HTTP", "ms_per_op": 1.5, "share": 0.75, "est_ms_per_op": 0.9},
                {"category": "kernel", "ms_per_op": 0.5, "share": None},
            ],
        },
        "agent-run": {"title": "Agent", "error": "py-spy missing"},
    }
    return Report({"date": "2026-01-01", "cpus": 2}, metrics, targets, profile, ["a note"])


def test_markdown_has_sections_ratios_targets_and_profiles() -> None:
    text = render_markdown(sample_report())
    assert "## S" in text and "## Baselines" in text
    assert "| run | 3 | 11.0 ms | 28.1 ms | 29.6 ms | 4.40× fork+exec; podman exec: not measured |" in text
    assert "not measured: not installed" in text
    assert "stream \\| pipe" in text  # table cells are escaped
    assert "| run vs fork | 4.40× (11.0 ms vs fork+exec 2.50 ms) | ≤ 2.00× | MISS |" in text
    assert "| HTTP | 1.50 | 75.0 % | 0.900 |" in text
    assert "| kernel | 0.500 | – | – |" in text
    assert "not profiled: py-spy missing" in text


def test_json_is_serialisable_and_carries_points_and_ratios() -> None:
    document = report_to_json(sample_report())
    json.dumps(document)
    rows = {row["key"]: row for row in document["metrics"]}
    assert rows["run"]["point"] == 11.0
    assert rows["run"]["ratios"] == {"fork": 4.4, "podman": None}
    assert rows["podman"]["point"] is None
    assert document["targets"][0]["status"] == "MISS"
