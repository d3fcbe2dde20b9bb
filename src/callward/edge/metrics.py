"""Prometheus metrics for one edge node. Labels are bounded enums (method, status class,
reason); never a user, number, URI or address (privacy: see docs/privacy.md)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from callward.events import SECURITY_ALERT_RULES

__all__ = ["KNOWN_METHODS", "SECURITY_RULES", "EdgeMetrics"]

KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip


# Bounded label set of callward_edge_security_alerts (anything else is counted as "other").
SECURITY_RULES = SECURITY_ALERT_RULES


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "callward_edge_requests", "SIP requests received", ["method"], registry=r
        )
        self.responses = Counter(
            "callward_edge_responses", "SIP responses sent upstream", ["code_class"], registry=r
        )
        self.rejected = Counter(
            "callward_edge_rejected",
            "Requests refused by the edge itself",
            ["reason"],
            registry=r,
        )
        self.failovers = Counter(
            "callward_edge_failovers", "Moves to the next outbound target", registry=r
        )
        self.calls_active = Gauge("callward_edge_calls_active", "Calls being tracked", registry=r)
        self.registrations = Gauge(
            "callward_edge_registrations", "Contact bindings known to this node", registry=r
        )
        self.security_alerts = Counter(
            "callward_edge_security_alerts",
            "SecurityAlert events raised by this node (scanners, lockouts, fraud)",
            ["rule"],
            registry=r,
        )
        self._req_children: dict[str, Any] = {}
        self._resp_children: dict[int, Any] = {}
        self.session_expired = Counter(
            "callward_edge_session_expired", "Dialogs torn down by RFC 4028 timers", registry=r
        )

    def request(self, method: str) -> None:
        # labels() costs ~25 µs; the children are cached (bounded: known methods + "other").
        child = self._req_children.get(method)
        if child is None:
            label = method if method in KNOWN_METHODS else "other"
            child = self.requests.labels(label)
            if label != "other":
                self._req_children[method] = child
        child.inc()

    def response(self, status: int) -> None:
        cls = status // 100
        child = self._resp_children.get(cls)
        if child is None:
            child = self._resp_children[cls] = self.responses.labels(f"{cls}xx")
        child.inc()

    def security_alert(self, rule: str) -> None:
        label = rule if rule in SECURITY_RULES else "other"
        self.security_alerts.labels(label).inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()
