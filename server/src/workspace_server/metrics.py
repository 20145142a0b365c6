"""Prometheus metrics, one registry per server instance."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _StateCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("workspace_sandboxes", "Sandboxes by state", labels=["state"])
        for state, count in self._counts().items():
            family.add_metric([state], count)
        yield family


class Metrics:
    """The server's Prometheus metrics, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.create_seconds = Histogram(
            "workspace_sandbox_create_seconds",
            "Time to create a sandbox",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.exec_seconds = Histogram(
            "workspace_process_run_seconds",
            "Time to run a command to completion",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pool_size = Gauge(
            "workspace_pool_size", "Warm sandboxes ready to hand out", ["template"], registry=self.registry
        )
        self.agent_disconnects = Counter(
            "workspace_agent_disconnects", "Agent links lost unexpectedly", registry=self.registry
        )

    def track_states(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_StateCollector(counts))
