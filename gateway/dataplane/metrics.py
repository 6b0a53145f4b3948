"""Prometheus metrics of one gateway (its own registry, so several can run in a process).

The request path records into :class:`FastCounter` / :class:`FastHistogram`: plain numbers,
no lock, folded into the prometheus_client children when the metrics are rendered. On a quiet
gateway every request runs with cold CPU caches, and prometheus_client's per-call locks and
objects cost ~10x more than adding two numbers (bench/dataplane.py's latency figure). The
exposition is the same: a scrape sees every observation made before it (the event loop that
records is the one that renders, so nothing is in flight during a render).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "FastCounter", "FastHistogram", "GatewayMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FastCounter:
    """``child.inc()`` deferred: counts here, added to the child on :meth:`flush`."""

    __slots__ = ("child", "count")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.count = 0

    def inc(self) -> None:
        self.count += 1

    def flush(self) -> None:
        if self.count:
            self.child.inc(self.count)
            self.count = 0


class FastHistogram:
    """``child.observe(amount)`` deferred: bucket counts and the sum here, added on :meth:`flush`
    to the child's own buckets (the bucket is the first bound >= amount, as observe() picks it)."""

    __slots__ = ("child", "bounds", "counts", "sum", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.pending = False

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount
        self.pending = True

    def flush(self) -> None:
        if not self.pending:
            return
        buckets = self.child._buckets
        counts = self.counts
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
                counts[i] = 0
        self.child._sum.inc(self.sum)
        self.sum = 0.0
        self.pending = False


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "terminus_gateway_requests", "HTTP requests answered by the gateway",
            ["destination", "decision", "code"], registry=r,
        )
        self.request_seconds = Histogram(
            "terminus_gateway_request_duration_seconds", "Time from request head to response sent",
            ["destination"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.lambda_invocations = Counter(
            "terminus_gateway_lambda_invocations", "Lambda Invoke calls by outcome",
            ["function", "outcome"], registry=r,
        )
        self.lambda_seconds = Histogram(
            "terminus_gateway_lambda_duration_seconds", "Lambda Invoke latency",
            ["function"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.connections = Counter(
            "terminus_gateway_connections", "Downstream TLS connections accepted (handshake done)", registry=r,
        )
        self.connections_active = Gauge(
            "terminus_gateway_connections_active", "Open downstream connections", registry=r,
        )
        self.rejected = Counter(
            "terminus_gateway_connections_rejected", "Connections refused before any request was served",
            ["reason"], registry=r,
        )
        self._fast: dict[tuple[int, tuple[str, ...]], FastCounter | FastHistogram] = {}

    def fast_counter(self, metric: Counter, *labels: str) -> FastCounter:
        """The deferred recorder of ``metric.labels(*labels)`` (one per label set)."""
        return self._recorder(FastCounter, metric, labels)  # type: ignore[return-value]

    def fast_histogram(self, metric: Histogram, *labels: str) -> FastHistogram:
        return self._recorder(FastHistogram, metric, labels)  # type: ignore[return-value]

    def _recorder(self, kind: type[FastCounter] | type[FastHistogram], metric: Any,
                  labels: tuple[str, ...]) -> FastCounter | FastHistogram:
        key = (id(metric), labels)
        hit = self._fast.get(key)
        if hit is None:
            hit = self._fast[key] = kind(metric.labels(*labels))
        return hit

    def flush(self) -> None:
        for recorder in self._fast.values():
            recorder.flush()

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)
