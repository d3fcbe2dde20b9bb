"""Prometheus metrics of the web face. Labels are bounded: the route *template*
(``/api/v1/calls/{call_id}``, never the path with an id in it), the method, the status class
and the kind of CDR read; never a subject, token, actor, address or call id (docs/privacy.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["KNOWN_METHODS", "WebMetrics"]

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class WebMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "callward_web_requests",
            "HTTP requests served",
            ["route", "method", "code_class"],
            registry=r,
        )
        self.latency = Histogram(
            "callward_web_request_seconds",
            "Time to serve a request",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.cdr_reads = Counter(
            "callward_web_cdr_reads",
            "Audited CDR reads through the web",
            ["kind"],
            registry=r,
        )
        self.cdr_records = Counter(
            "callward_web_cdr_records_served", "CDRs returned by audited reads", registry=r
        )
        self.reveals = Counter(
            "callward_web_reveals", "Reads that showed identifiers in clear", registry=r
        )
        self.audit_intact = Gauge(
            "callward_web_audit_chain_intact",
            "1 when the last audit chain check found no problem",
            registry=r,
        )

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        m = method if method in KNOWN_METHODS else "other"
        self.requests.labels(route, m, f"{status // 100}xx").inc()
        self.latency.labels(route).observe(seconds)
