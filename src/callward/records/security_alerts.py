"""The consumer of :class:`~callward.events.SecurityAlert` events (admission, scanners, fraud,
failed auth, TLS expiry): a structured log line, a per-rule count, and the newest alerts kept
for the dashboard's security view.

Nothing from the alert reaches the log in the clear: the source (an address or an account) is
replaced by a keyed pseudonym (stable, so an operator can correlate repeated alerts without
seeing the address), the rule is a bounded label, and the detail is reduced to printable ASCII
before the privacy layer's redaction processor sees it too.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

import structlog

from callward.events import SECURITY_ALERT_RULES, Event, SecurityAlert
from callward.privacy.pseudonym import Pseudonymizer

__all__ = ["KNOWN_RULES", "AlertRecord", "SecurityAlertLog", "safe_text"]

log = structlog.get_logger("callward.security")

KNOWN_RULES = SECURITY_ALERT_RULES


def safe_text(text: str, limit: int = 120) -> str:
    """Printable ASCII only (control characters, ESC sequences and non-ASCII become '?')."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:limit])


@dataclass(frozen=True, slots=True)
class AlertRecord:
    ts: float
    node: str
    tenant: str
    rule: str
    source: str  # pseudonym
    detail: str


class SecurityAlertLog:
    def __init__(self, pseudonymizer: Pseudonymizer | None = None, *, keep: int = 500) -> None:
        # A per-process key when none is configured: stable within a run, useless outside it.
        self.pseudonymizer = pseudonymizer or Pseudonymizer(secrets.token_bytes(32))
        self.recent: deque[AlertRecord] = deque(maxlen=keep)
        self.counts: dict[str, int] = {}

    def handle(self, event: Event) -> None:
        if not isinstance(event, SecurityAlert):
            return
        rule = event.rule if event.rule in KNOWN_RULES else "other"
        source = "src:" + self.pseudonymizer.digest(event.source).hex()[:12] if event.source else ""
        record = AlertRecord(
            event.ts, safe_text(event.node, 40), safe_text(event.tenant, 40), rule, source,
            safe_text(event.detail),
        )  # fmt: skip
        self.recent.append(record)
        self.counts[rule] = self.counts.get(rule, 0) + 1
        log.warning(
            "security_alert", rule=rule, source_pseudonym=source, detail=record.detail,
            node=record.node, tenant=record.tenant,
        )  # fmt: skip
