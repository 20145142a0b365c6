"""Summary statistics of timing samples (pure: no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MB = 1_000_000  # throughput is reported in MB/s with MB = 10^6 bytes
MIB = 1 << 20


@dataclass(frozen=True)
class Summary:
    """Distribution of one measurement, in the measurement's own unit."""

    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    min: float
    max: float


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks
    (numpy's default method). Raises ValueError on an empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    fraction = position - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summary of no values")
    return Summary(
        n=len(values),
        mean=sum(values) / len(values),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        min=float(min(values)),
        max=float(max(values)),
    )


def scaled(values: Sequence[float], factor: float) -> list[float]:
    """Unit conversion of every sample, e.g. seconds to milliseconds."""
    return [v * factor for v in values]


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when either is missing or the baseline is not positive."""
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


def mb_per_s(nbytes: int, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("a transfer takes a positive time")
    return nbytes / MB / seconds
