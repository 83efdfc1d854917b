"""The bridge's Prometheus metrics, served by the receiver at ``GET /metrics`` (loopback, like the rest).

Counted as they happen, in this process: triggers delivered, the time from an event's arrival in the
outbox to its run in GoCD, and GoCD's failures. Read at each scrape from the outbox, so they are true
whichever process delivers and survive restarts: the rows in each status (pending, claimed, scheduled,
delivered, parked). ``mlflow_bridge_outbox_up`` is 0 when the outbox database did not answer the scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry()
DELIVERED = Counter(
    "mlflow_bridge_delivered",
    "Triggers GoCD accepted (or that its history showed had arrived).",
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "mlflow_bridge_delivery_latency_seconds",
    "Seconds from an event's arrival in the outbox to its delivery to GoCD.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
GOCD_ERRORS = Counter(
    "mlflow_bridge_gocd_errors",
    "GoCD calls that failed: unavailable (no answer, 5xx) or rejected (4xx).",
    ["kind"],
    registry=REGISTRY,
)
for _kind in ("unavailable", "rejected"):
    GOCD_ERRORS.labels(kind=_kind)


def delivered(created_at_ms: int, now_ms: int) -> None:
    DELIVERED.inc()
    DELIVERY_LATENCY.observe(max(0, now_ms - created_at_ms) / 1000)


class OutboxCollector(Collector):
    """Rows per status, asked of the outbox at each scrape."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("mlflow_bridge_outbox_up", "1 when the outbox database answered this scrape.")
        try:
            counts = self.counts()
        except Exception:  # the database is down: say so, and keep the process's own metrics
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        rows = GaugeMetricFamily(
            "mlflow_bridge_outbox_rows", "Outbox rows in each status.", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            rows.add_metric([status], count)
        yield rows


def render(counts: Callable[[], dict[str, int]]) -> bytes:
    """The process's metrics and the outbox's, in Prometheus' text format."""
    registry = CollectorRegistry()
    registry.register(OutboxCollector(counts))
    return bytes(generate_latest(REGISTRY)) + bytes(generate_latest(registry))
