"""Scanner detection for the edge (sans-IO): fingerprints of sipvicious and its relatives.

Signals, each cheap and bounded:

- **User-Agent** of known scanners (``friendly-scanner`` is sipvicious' default, others from
  published honeypot reports); also the sipvicious default Contact ``sip:123@1.1.1.1``.
- **OPTIONS sweeps**: one source probing many distinct Request-URIs with OPTIONS (svmap).
- **Extension enumeration**: one source sending unauthenticated REGISTER/INVITE for many
  distinct users and never answering the challenges (svwar). A phone answers its challenge
  within a second; a NATed office re-registering after an outage answers every one of them,
  so it is never flagged however many phones it holds.

Scanner hits are returned to :class:`~callward.edge.admission.Admission`, which raises the
alert and blocks the source for ``block_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callward.edge.bounded_table import BoundedTable

__all__ = ["SCANNER_AGENTS", "ScannerDetector", "ScannerPolicy"]

# Lower-case substrings of User-Agent values sent by SIP scanners and toll-fraud tools.
SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "vaxsipuseragent",
    "pplsip",
    "smap",
    "sipsscuser",
    "voipsniff",
)
_SCANNER_CONTACTS = ("sip:123@1.1.1.1",)


@dataclass(frozen=True, slots=True)
class ScannerPolicy:
    window: float = 60.0  # seconds over which distinct targets are counted
    options_targets: int = 20  # distinct OPTIONS Request-URIs per source and window
    unanswered: int = 10  # distinct users whose challenge went unanswered, per source/window
    answer_grace: float = 8.0  # seconds a client has to answer a challenge
    block_seconds: float = 600.0
    max_sources: int = 8192  # sources tracked (LRU)
    max_targets: int = 64  # distinct targets remembered per source
    agents: tuple[str, ...] = field(default=SCANNER_AGENTS)


@dataclass(slots=True)
class _Track:
    start: float
    options: set[str] = field(default_factory=set)
    pending: dict[str, tuple[float, str]] = field(default_factory=dict)  # call-id -> deadline, user
    unanswered: set[str] = field(default_factory=set)


class ScannerDetector:
    def __init__(self, policy: ScannerPolicy | None = None) -> None:
        self.policy = policy if policy is not None else ScannerPolicy()
        self._tracks: BoundedTable[str, _Track] = BoundedTable(self.policy.max_sources)

    def user_agent_hit(self, user_agent: str) -> bool:
        ua = user_agent.lower()
        return bool(ua) and any(a in ua for a in self.policy.agents)

    def observe(
        self, source: str, method: str, user_agent: str, target: str, now: float, contact: str = ""
    ) -> tuple[str, str] | None:
        """One unauthenticated request; returns ``(rule, detail)`` when the source scans."""
        p = self.policy
        if self.user_agent_hit(user_agent) or any(c in contact for c in _SCANNER_CONTACTS):
            return "scanner-user-agent", "known scanner fingerprint"
        t = self._tracks.get(source)
        if t is None or now - t.start > p.window:
            t = _Track(start=now)
            self._tracks.put(source, t)
        if method == "OPTIONS" and target:
            if len(t.options) < p.max_targets:
                t.options.add(target)
            if len(t.options) >= p.options_targets:
                return "options-sweep", f"{len(t.options)} targets in {p.window:.0f}s"
        self._expire(t, now)
        if len(t.unanswered) >= p.unanswered:
            return "extension-scan", f"{len(t.unanswered)} unanswered challenges"
        return None

    def challenged(self, source: str, call_id: str, user: str, now: float) -> None:
        """The edge challenged a request (``call_id``, aimed at ``user``) from ``source``: a
        real client answers on the same Call-ID within :attr:`ScannerPolicy.answer_grace`."""
        t = self._tracks.get(source)
        if t is None:
            t = _Track(start=now)
            self._tracks.put(source, t)
        if call_id not in t.pending and len(t.pending) < self.policy.max_targets:
            t.pending[call_id] = (now + self.policy.answer_grace, user)

    def answered(self, source: str, call_id: str) -> None:
        t = self._tracks.peek(source)
        if t is not None:
            t.pending.pop(call_id, None)

    def forgive(self, source: str) -> None:
        """The source authenticated: what it left unanswered was a client's, not a scan's."""
        t = self._tracks.peek(source)
        if t is not None:
            t.pending.clear()
            t.unanswered.clear()

    def _expire(self, t: _Track, now: float) -> None:
        if not t.pending:
            return
        late = [c for c, (deadline, _) in t.pending.items() if deadline <= now]
        for c in late:
            _, user = t.pending.pop(c)
            if len(t.unanswered) < self.policy.max_targets:
                t.unanswered.add(user or c)
