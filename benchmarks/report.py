"""The benchmark's results: measurements, ratios against baselines, targets, and their
Markdown and JSON renderings (pure: no I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from benchmarks.stats import Summary, ratio

Status = Literal["PASS", "MISS", "N/A"]


@dataclass
class Metric:
    """One row: a distribution (`summary`) or a single number (`value`), or the reason it
    could not be measured (`error`)."""

    key: str
    section: str
    label: str
    unit: str
    summary: Summary | None = None
    value: float | None = None
    short: str = ""  # how other rows name this one in their ratio column
    baselines: tuple[str, ...] = ()  # keys of rows to show p50 ratios against
    note: str = ""
    error: str | None = None

    @property
    def point(self) -> float | None:
        """The number compared against baselines and targets: p50, or the single value."""
        if self.error is not None:
            return None
        if self.summary is not None:
            return self.summary.p50
        return self.value

    @property
    def name(self) -> str:
        return self.short or self.label


def failed(key: str, section: str, label: str, unit: str, reason: str, short: str = "") -> Metric:
    return Metric(key=key, section=section, label=label, unit=unit, short=short, error=reason)


@dataclass(frozen=True)
class Target:
    """A goal checked and reported, never asserted.

    Plain: `metric`'s p50 (or value) against `limit`. With `baseline`: the ratio
    metric/baseline, or baseline/metric when `speedup` (how many times faster)."""

    label: str
    metric: str
    limit: float
    at_most: bool
    baseline: str | None = None
    speedup: bool = False


@dataclass(frozen=True)
class TargetResult:
    label: str
    measured: str
    limit: str
    status: Status
    reason: str = ""


@dataclass
class Report:
    meta: dict[str, Any]
    metrics: list[Metric]
    targets: list[TargetResult] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def by_key(self) -> dict[str, Metric]:
        return {m.key: m for m in self.metrics}


# --------------------------------------------------------------------------- formatting


def fmt_number(x: float) -> str:
    magnitude = abs(x)
    if magnitude >= 100:
        return f"{x:,.0f}"
    if magnitude >= 10:
        return f"{x:.1f}"
    if magnitude >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "–"
    return f"{fmt_number(x)} {unit}".strip()


def fmt_ratio(r: float, baseline_name: str, lower_is_better: bool) -> str:
    text = f"{fmt_number(r)}× {baseline_name}"
    if lower_is_better and 0 < r < 1:
        text += f" ({fmt_number(1 / r)}× faster)"
    return text


def lower_is_better(unit: str) -> bool:
    return not unit.endswith("/s")


def ratios(metric: Metric, metrics: dict[str, Metric]) -> list[str]:
    out: list[str] = []
    for key in metric.baselines:
        base = metrics.get(key)
        if base is None:
            continue
        r = ratio(metric.point, base.point)
        if r is None:
            reason = "not measured" if base.error is not None else "n/a"
            out.append(f"{base.name}: {reason}")
        else:
            out.append(fmt_ratio(r, base.name, lower_is_better(metric.unit)))
    return out


# --------------------------------------------------------------------------- targets


def evaluate(target: Target, metrics: dict[str, Metric]) -> TargetResult:
    comparison = "≤" if target.at_most else "≥"
    metric = metrics.get(target.metric)
    if metric is None or metric.point is None:
        why = metric.error if metric is not None and metric.error else "not measured"
        return TargetResult(target.label, "–", f"{comparison} {fmt_number(target.limit)}", "N/A", why or "")
    if target.baseline is None:
        measured = metric.point
        measured_text = fmt(measured, metric.unit)
        limit_text = f"{comparison} {fmt(target.limit, metric.unit)}"
    else:
        base = metrics.get(target.baseline)
        if base is None or base.point is None:
            why = base.error if base is not None and base.error else "baseline not measured"
            return TargetResult(target.label, "–", f"{comparison} {fmt_number(target.limit)}×", "N/A", why or "")
        r = ratio(base.point, metric.point) if target.speedup else ratio(metric.point, base.point)
        if r is None:
            return TargetResult(
                target.label, "–", f"{comparison} {fmt_number(target.limit)}×", "N/A", "ratio undefined"
            )
        measured = r
        measured_text = (
            f"{fmt_number(r)}× ({fmt(metric.point, metric.unit)} vs {base.name} {fmt(base.point, base.unit)})"
        )
        limit_text = f"{comparison} {fmt_number(target.limit)}×"
    ok = measured <= target.limit if target.at_most else measured >= target.limit
    return TargetResult(target.label, measured_text, limit_text, "PASS" if ok else "MISS")


def evaluate_all(targets: list[Target], metrics: list[Metric]) -> list[TargetResult]:
    index = {m.key: m for m in metrics}
    return [evaluate(t, index) for t in targets]


# --------------------------------------------------------------------------- rendering


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def metric_cells(metric: Metric, metrics: dict[str, Metric]) -> list[str]:
    if metric.error is not None:
        return [metric.label, "–", "–", "–", "–", "", f"not measured: {metric.error}"]
    if metric.summary is not None:
        s = metric.summary
        numbers = [str(s.n), fmt(s.p50, metric.unit), fmt(s.p95, metric.unit), fmt(s.p99, metric.unit)]
    else:
        numbers = ["1", fmt(metric.value, metric.unit), "", ""]
    return [metric.label, *numbers, "; ".join(ratios(metric, metrics)), metric.note]


def render_markdown(report: Report) -> str:
    metrics = report.by_key()
    lines: list[str] = ["# Workspace benchmark results", ""]
    meta = report.meta
    facts = [f"{k}: {v}" for k, v in meta.items() if isinstance(v, str | int | float)]
    if facts:
        lines += ["- " + fact for fact in facts] + [""]
    sections: list[str] = []
    for m in report.metrics:
        if m.section not in sections:
            sections.append(m.section)
    header = ["Measurement", "n", "p50", "p95", "p99", "vs baseline (p50 ratio)", "notes"]
    for section in sections:
        lines += [f"## {section}", "", _row(header), _row(["---"] * len(header))]
        lines += [_row(metric_cells(m, metrics)) for m in report.metrics if m.section == section]
        lines.append("")
    if report.targets:
        lines += ["## Targets", "", _row(["Target", "Measured", "Limit", "Result"]), _row(["---"] * 4)]
        for t in report.targets:
            result = t.status if not t.reason else f"{t.status} ({t.reason})"
            lines.append(_row([t.label, t.measured, t.limit, result]))
        lines.append("")
    if report.profile:
        lines += render_profile(report.profile)
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def render_profile(profile: dict[str, Any]) -> list[str]:
    """Profile breakdowns: {name: {"title", "ops", "unit", "rows": [{"category", "ms_per_op", "share"}]}}."""
    lines = ["## Where the time goes (profiles)", ""]
    for name, section in profile.items():
        if not isinstance(section, dict):
            continue
        title = str(section.get("title", name))
        lines += [f"### {title}", ""]
        if section.get("error"):
            lines += [f"not profiled: {section['error']}", ""]
            continue
        if section.get("summary"):
            lines += [str(section["summary"]), ""]
        per_op = str(section.get("per_op_label", "ms per op"))
        rows = section.get("rows", [])
        estimated = any("est_ms_per_op" in row for row in rows)
        header = ["Category", f"{per_op} (profiled)", "share of busy time"]
        if estimated:
            header.append(f"≈ {per_op} unprofiled")
        lines += [_row(header), _row(["---"] * len(header))]
        for row in rows:
            share = row.get("share")
            cells = [
                str(row["category"]),
                fmt_number(float(row["ms_per_op"])),
                "–" if share is None else f"{float(share) * 100:.1f} %",
            ]
            if estimated:
                cells.append(fmt_number(float(row["est_ms_per_op"])) if "est_ms_per_op" in row else "–")
            lines.append(_row(cells))
        lines.append("")
    return lines


def report_to_json(report: Report) -> dict[str, Any]:
    metrics = report.by_key()
    rows = []
    for m in report.metrics:
        row = asdict(m)
        row["point"] = m.point
        row["ratios"] = {key: ratio(m.point, metrics[key].point) for key in m.baselines if key in metrics}
        rows.append(row)
    return {
        "meta": report.meta,
        "metrics": rows,
        "targets": [asdict(t) for t in report.targets],
        "profile": report.profile,
        "notes": report.notes,
    }
