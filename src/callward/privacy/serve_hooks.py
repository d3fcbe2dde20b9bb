"""The privacy layer inside ``callward serve`` (wired by :mod:`callward.runtime`): the
retention scheduler, the consent-gated recording and lawful-interception tap policy the relay
consults when a call's media starts, the IRI subscriber and the mediation client.

* :meth:`PrivacyServices.taps_for` is the relay's ``tap_policy``: it returns the X3 tap of a
  call under an active CC warrant and, with ``privacy.record_calls``, a :class:`RecordingTap`
  only when the consent rule of the tenant's recording jurisdiction holds for the parties.
* Where the rule needs an announcement, the relay plays a tone into both directions of the
  call when recording starts and every 15 s while it records
  (:mod:`callward.privacy.announcement`, through ``MediaCore.overlay``).
* A recording re-checks consent every second of media and stops (audited) the moment a
  required consent is withdrawn; recordings live in ``<data_dir>/recordings`` under the
  ``recording`` retention rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callward.errors import ConfigError
from callward.privacy.announcement import RecordingAnnouncement
from callward.privacy.consent import ConsentMode, ConsentRegistry
from callward.privacy.intercept import InterceptPolicy, IriSubscriber, WarrantRegistry
from callward.privacy.mediation import MediationClient

__all__ = ["PrivacyServices", "RecordingTap", "open_privacy_services"]


@dataclass
class RecordingTap:
    """Writes relayed RTP of a consented call (length-prefixed packets after a JSON header
    line); stops for good when consent no longer holds."""

    path: Path
    call_id: str
    parties: tuple[str, ...]  # pseudonyms
    jurisdiction: str
    consent: ConsentRegistry
    announcement: bool
    wall_offset: float = 0.0
    recording: bool = True
    packets: int = 0
    stopped_reason: str = ""
    player: RecordingAnnouncement | None = None
    overlay: Callable[[int, bytes, float], bytes] | None = None  # read by the relay
    _fh: Any = None
    _checked: float = 0.0

    def __post_init__(self) -> None:
        if self.announcement:  # the relay plays it into both directions (MediaCore.overlay)
            self.player = RecordingAnnouncement(active=lambda: self.recording)
            self.overlay = self.player.overlay
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")
        head = {"format": "callward-recording/1", "announcement": self.announcement,
                "jurisdiction": self.jurisdiction}  # fmt: skip
        self._fh.write(json.dumps(head).encode() + b"\n")

    def _consent_holds(self, now: float) -> bool:
        rule = self.consent.rule(self.jurisdiction)
        states = [self.consent.state(p, self.jurisdiction, now) for p in self.parties]
        return all(states) if rule.mode is ConsentMode.ALL_PARTY else any(states)

    def on_packet(self, call_id: str, leg: str, packet: bytes, *, rtcp: bool, now: float) -> None:
        if not self.recording or rtcp:
            return
        wall = now + self.wall_offset
        if wall - self._checked >= 1.0:
            self._checked = wall
            if not self._consent_holds(wall):
                self._stop("consent withdrawn")
                return
        self._fh.write(struct.pack("!cH", leg.encode()[:1], len(packet)) + packet)
        self.packets += 1

    def _stop(self, reason: str) -> None:
        self.recording = False
        self.stopped_reason = reason
        self._fh.close()
        self.consent.audit.record("consent-policy", "recording", f"recording stopped: {reason}",
                                  "consent-policy", [self.call_id])  # fmt: skip

    def on_close(self, call_id: str) -> None:
        if self.recording:
            self.recording = False
            self._fh.close()


@dataclass
class PrivacyServices:
    config: Any
    records: Any
    consent: ConsentRegistry
    retention: Any = None  # RetentionScheduler
    intercept: InterceptPolicy | None = None
    mediation: MediationClient | None = None
    parties: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    recordings: dict[str, RecordingTap] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _max_calls: int = 100_000

    def handle(self, event: Any) -> None:
        """Bus subscriber: remember the parties of live calls (for consent decisions)."""
        if event.kind == "call_started":
            if len(self.parties) >= self._max_calls:
                self.parties.pop(next(iter(self.parties)))
            self.parties[event.call_id] = (event.caller, event.callee, event.tenant)
        elif event.kind == "call_ended":
            self.parties.pop(event.call_id, None)
            self.recordings.pop(event.call_id, None)

    def jurisdiction(self, tenant: str) -> str:
        p = self.config.privacy
        return str(p.tenant_recording_jurisdictions.get(tenant, p.recording_jurisdiction))

    def taps_for(self, call_id: str, now: float) -> list[Any]:
        taps: list[Any] = []
        if self.intercept is not None:
            tap = self.intercept.cc_tap(call_id, now)
            if tap is not None:
                taps.append(tap)
        if self.config.privacy.record_calls:
            caller, callee, tenant = self.parties.get(call_id, ("", "", "default"))
            j = self.jurisdiction(tenant)
            decision = self.consent.decide(call_id, [caller, callee], j, now)
            if decision.allowed:
                pns = tuple(
                    sorted({self.consent.pseudo.pseudonym(p) for p in (caller, callee) if p})
                )
                name = hashlib.sha256(call_id.encode()).hexdigest()[:24] + ".rtp"
                rec = RecordingTap(Path(self.records.data_dir) / "recordings" / name, call_id,
                                   pns, j, self.consent, decision.announcement)  # fmt: skip
                self.recordings[call_id] = rec
                taps.append(rec)
        return taps

    def start(self, stop: asyncio.Event) -> None:
        if self.retention is not None:
            self.tasks.append(asyncio.create_task(self.retention.run_forever(stop)))
        if self.mediation is not None:
            self.tasks.append(asyncio.create_task(self.mediation.run(stop)))

    def close(self) -> None:
        self.consent.close()
        if self.intercept is not None:
            self.intercept.warrants.close()
            self.intercept.audit.close()


def open_privacy_services(config: Any, records: Any, bus: Any) -> PrivacyServices:
    """Build and subscribe everything; ConfigError (fail closed) on a retention policy gap or
    a bad mediation address."""
    from callward.privacy.retention_stores import open_retention
    from callward.records.audit import AuditLog
    from callward.records.retention import RetentionScheduler

    d = Path(records.data_dir)
    pseudo = records.codec.cipher.pseudonymizer
    policy = records.policy(config.retention.rule_sets)
    setup = open_retention(config, records)
    scheduler = RetentionScheduler(setup.stores, policy, records.holds, records.audit,
                                   interval_s=config.retention.interval_s)  # fmt: skip
    consent = ConsentRegistry(d / "consent.db", pseudo, records.audit)
    consent.rule(config.privacy.recording_jurisdiction)  # fail closed at start
    svc = PrivacyServices(config, records, consent, retention=scheduler)
    bus.subscribe(svc.handle)
    if config.privacy.li_mediation:
        host, _, port_text = str(config.privacy.li_mediation).rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(
                f"privacy.li_mediation {config.privacy.li_mediation!r}: expected HOST:PORT"
            )
        host, port = host.strip("[]"), int(port_text)
        li_audit = AuditLog(d / "li" / "audit.db")  # the LI trail, separate from the CDR trail
        svc.mediation = MediationClient(host, port)
        svc.intercept = InterceptPolicy(
            WarrantRegistry(d / "li" / "warrants.db", pseudo, li_audit),
            svc.mediation.deliver, li_audit, pseudo,
        )  # fmt: skip
        bus.subscribe(IriSubscriber(svc.intercept).handle)
    return svc
