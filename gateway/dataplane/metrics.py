"""Prometheus metrics of one gateway (its own registry, so several can run in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
