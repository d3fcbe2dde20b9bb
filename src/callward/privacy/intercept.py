"""Lawful interception, named and shaped after ETSI TS 103 221 (X1 administration, X2 IRI,
X3 content).

* **X1-like warrant administration** (:class:`WarrantRegistry`): a warrant (``LIID``) names
  target identifiers (MSISDN/URI, stored only as keyed pseudonyms), a scope (IRI and/or CC), a
  validity window and the issuing authority. Only the ``li-officer`` role may act, with dual
  control: one officer *provisions*, a different officer *activates*. The LI trail is its own
  hash-chained audit log (``var/li/audit.db``), never the CDR access trail, so other roles do
  not learn that an interception exists.
* **X2 (IRI)** (:class:`IriSubscriber`): an event-bus subscriber turning CallStarted /
  CallAnswered / CallEnded / RegistrationChanged of a *matched target under an active warrant
  with IRI scope* into IRI records (BEGIN / CONTINUE / END / REPORT).
* **X3 (CC)** (:class:`InterceptPolicy.cc_tap`): a relay tap that copies the decrypted media of
  a matched call under a warrant with CC scope. When the call is end-to-end encrypted beyond the
  relay (ZRTP, or DTLS-SRTP that the relay does not terminate), no content exists at the relay:
  an IRI record says ``cc: content-unavailable`` and nothing is weakened.

Everything leaves as TS 103 221-2 X2/X3 PDUs (:mod:`callward.privacy.x2x3`, validated on encode
and decode) to one mediation endpoint: IRI as a MIME entity (payload format 15,
``application/json``, direction not applicable), content as RTP packets (format 8, direction
to/from the target), each with a Timestamp and a per-XID Sequence Number attribute. Nothing is
intercepted without a warrant that is active at that instant: an expired, not-yet-valid, not
activated or revoked warrant matches nothing.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from callward.errors import PolicyError, StoreError, X2X3Error
from callward.privacy.pseudonym import Pseudonymizer
from callward.privacy.x2x3 import (
    Direction,
    PayloadFormat,
    Pdu,
    PduType,
    decode_pdu,
    encode_pdu,
    sequence_attr,
    timestamp_attr,
)

__all__ = [
    "LI_ROLE",
    "CcTap",
    "Direction",
    "InterceptPolicy",
    "IriSubscriber",
    "PayloadFormat",
    "Pdu",
    "PduType",
    "Warrant",
    "WarrantRegistry",
    "decode_pdu",
    "encode_pdu",
    "iri_record",
]

LI_ROLE = "li-officer"
_MAX_TARGETS = 64


def iri_record(pdu: Pdu) -> dict[str, Any]:
    """The IRI record of an X2 PDU callward sent (a MIME entity holding JSON)."""
    _, _, body = pdu.payload.partition(b"\r\n\r\n")
    try:
        record = json.loads(body)
    except ValueError:
        raise X2X3Error("X2 IRI: MIME body is not JSON") from None
    if not isinstance(record, dict):
        raise X2X3Error("X2 IRI: expected a JSON object")
    return record


# --- X1: warrants ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Warrant:
    liid: str
    targets: tuple[str, ...]  # keyed pseudonyms of the target identifiers
    iri: bool
    cc: bool
    valid_from: float
    valid_to: float
    authority: str
    provisioned_by: str
    activated_by: str = ""
    revoked: bool = False
    xid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def active(self, now: float) -> bool:
        return (
            bool(self.activated_by) and not self.revoked and self.valid_from <= now < self.valid_to
        )


def _officer(actor: str, role: str) -> None:
    if role != LI_ROLE:
        raise PolicyError("lawful interception: only the li-officer role may do this")
    if not actor.strip():
        raise PolicyError("lawful interception: actor required")


class WarrantRegistry:
    """X1-like administration with dual control; its own audit trail (``audit``)."""

    def __init__(self, path: Path | str, pseudonymizer: Pseudonymizer, audit: Any) -> None:
        self.pseudo = pseudonymizer
        self.audit = audit
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS warrants (liid TEXT PRIMARY KEY, body TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: warrant registry unavailable: {exc}") from None

    def _save(self, w: Warrant) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO warrants VALUES (?,?)", (w.liid, json.dumps(asdict(w)))
        )

    def get(self, liid: str) -> Warrant:
        row = self._db.execute("SELECT body FROM warrants WHERE liid=?", (liid,)).fetchone()
        if row is None:
            raise PolicyError(f"warrant {liid[:40]!r}: not found")
        d = json.loads(row[0])
        d["targets"] = tuple(d["targets"])
        return Warrant(**d)

    def all(self, *, actor: str, role: str) -> list[Warrant]:
        _officer(actor, role)
        rows = self._db.execute("SELECT body FROM warrants ORDER BY liid").fetchall()
        out = []
        for (body,) in rows:
            d = json.loads(body)
            d["targets"] = tuple(d["targets"])
            out.append(Warrant(**d))
        return out

    def provision(
        self,
        *,
        actor: str,
        role: str,
        liid: str,
        targets: Iterable[str],
        iri: bool,
        cc: bool,
        valid_from: float,
        valid_to: float,
        authority: str,
    ) -> Warrant:
        """First officer: records the warrant, inactive until a second officer activates it."""
        _officer(actor, role)
        tg = tuple(sorted({self.pseudo.pseudonym(t) for t in targets}))
        if not tg or len(tg) > _MAX_TARGETS:
            raise PolicyError(f"warrant: 1-{_MAX_TARGETS} target identifiers")
        if not (iri or cc):
            raise PolicyError("warrant: scope must include IRI and/or CC")
        if valid_to <= valid_from:
            raise PolicyError("warrant: valid_to must be after valid_from")
        if not liid.strip() or len(liid) > 64 or not authority.strip():
            raise PolicyError("warrant: LIID (<= 64 chars) and issuing authority required")
        exists = self._db.execute("SELECT 1 FROM warrants WHERE liid=?", (liid,)).fetchone()
        if exists:
            raise PolicyError(f"warrant {liid!r}: already provisioned")
        w = Warrant(liid, tg, iri, cc, valid_from, valid_to, authority, actor)
        self.audit.record(actor, "warrant", "provision", liid, detail=json.dumps(
            {"scope": [s for s, on in (("IRI", iri), ("CC", cc)) if on], "targets": len(tg),
             "valid_from": valid_from, "valid_to": valid_to, "authority": authority}))  # fmt: skip
        self._save(w)
        return w

    def activate(self, liid: str, *, actor: str, role: str) -> Warrant:
        """Second officer (dual control: never the one who provisioned it)."""
        _officer(actor, role)
        w = self.get(liid)
        if actor == w.provisioned_by:
            raise PolicyError("warrant: dual control — a second officer must activate it")
        if w.revoked or w.activated_by:
            raise PolicyError(f"warrant {liid!r}: already activated or revoked")
        w = Warrant(**{**asdict(w), "targets": w.targets, "activated_by": actor})
        self.audit.record(actor, "warrant", "activate", liid)
        self._save(w)
        return w

    def revoke(self, liid: str, *, actor: str, role: str, reason: str) -> Warrant:
        _officer(actor, role)
        w = self.get(liid)
        w = Warrant(**{**asdict(w), "targets": w.targets, "revoked": True})
        self.audit.record(actor, "warrant", f"revoke: {reason}"[:200], liid)
        self._save(w)
        return w

    def matching(self, pns: Iterable[str], now: float) -> list[Warrant]:
        wanted = set(pns)
        rows = self._db.execute("SELECT body FROM warrants").fetchall()
        out = []
        for (body,) in rows:
            d = json.loads(body)
            d["targets"] = tuple(d["targets"])
            w = Warrant(**d)
            if w.active(now) and wanted & set(w.targets):
                out.append(w)
        return out

    def close(self) -> None:
        self._db.close()


# --- X2 / X3 -----------------------------------------------------------------------------------


Deliver = Callable[[bytes], None]  # sends one PDU to the mediation endpoint


@dataclass
class InterceptPolicy:
    """Which calls are intercepted: decided at call start (the relay's tap point and the IRI
    subscriber share it), re-checked on every packet against the warrant's validity."""

    warrants: WarrantRegistry
    deliver: Deliver
    audit: Any
    pseudo: Pseudonymizer
    calls: dict[str, list[Warrant]] = field(default_factory=dict)
    sent: int = 0
    _seq: dict[str, int] = field(default_factory=dict)  # XID -> next sequence number

    def _pn(self, identifier: str) -> str:
        try:
            return self.pseudo.pseudonym(identifier) if identifier else ""
        except PolicyError:
            return ""

    def match_call(self, call_id: str, parties: Iterable[str], now: float) -> list[Warrant]:
        found = self.warrants.matching({self._pn(p) for p in parties} - {""}, now)
        if found:
            self.calls[call_id] = found
        return found

    def send(self, w: Warrant, pdu_type: PduType, payload: bytes, corr: int,
             fmt: PayloadFormat, direction: Direction, ts: float) -> None:  # fmt: skip
        seq = self._seq.get(w.xid, 0)
        self._seq[w.xid] = seq + 1
        attrs = (timestamp_attr(ts), sequence_attr(seq))
        pdu = Pdu(pdu_type, fmt, direction, uuid.UUID(w.xid), corr, attrs, payload)
        self.deliver(encode_pdu(pdu))
        self.sent += 1

    def iri(self, w: Warrant, call_id: str, kind: str, ts: float, **extra: Any) -> None:
        record = {"liid": w.liid, "type": kind, "ts": ts, "call_id": call_id, **extra}
        corr = int.from_bytes(uuid.uuid5(uuid.NAMESPACE_OID, call_id).bytes[:8], "big")
        entity = b"Content-Type: application/json\r\n\r\n" + json.dumps(record).encode()
        self.send(w, PduType.X2, entity, corr, PayloadFormat.MIME, Direction.NOT_APPLICABLE, ts)

    def cc_tap(self, call_id: str, now: float, e2e_encrypted: bool = False) -> CcTap | None:
        """The X3 tap the relay attaches for this call, or None (no CC warrant). For an
        end-to-end encrypted call no tap: an IRI says content is unavailable."""
        cc = [w for w in self.calls.get(call_id, []) if w.cc and w.active(now)]
        if not cc:
            return None
        if e2e_encrypted:
            for w in cc:
                self.iri(w, call_id, "REPORT", now, cc="content-unavailable",
                         why="end-to-end encrypted beyond the relay")  # fmt: skip
            return None
        for w in cc:
            self.audit.record("li-system", "intercept", "CC started", w.liid, [call_id])
        return CcTap(self, call_id, cc)


@dataclass
class CcTap:
    """Relay tap (``relay.taps.MediaTap``): each plain RTP packet becomes an X3 PDU per
    warrant still active at that packet's time."""

    policy: InterceptPolicy
    call_id: str
    warrants: list[Warrant]
    wall_offset: float = 0.0  # relay clock -> epoch seconds
    packets: int = 0
    malformed: int = 0

    def on_packet(self, call_id: str, leg: str, packet: bytes, *, rtcp: bool, now: float) -> None:
        if rtcp:
            return
        corr = int.from_bytes(uuid.uuid5(uuid.NAMESPACE_OID, call_id).bytes[:8], "big")
        direction = Direction.FROM_TARGET if leg == "a" else Direction.TO_TARGET
        for w in self.warrants:
            if w.active(now + self.wall_offset):
                try:
                    self.policy.send(w, PduType.X3, packet, corr, PayloadFormat.RTP, direction,
                                     now + self.wall_offset)  # fmt: skip
                except X2X3Error:
                    self.malformed += 1  # not an RTP packet: never delivered as one
                    return
                self.packets += 1

    def on_close(self, call_id: str) -> None:
        return None


@dataclass
class IriSubscriber:
    """Event-bus subscriber (``runtime.SUBSCRIBER_FACTORIES``): X2 IRI for matched targets."""

    policy: InterceptPolicy

    def handle(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        ts = float(getattr(event, "ts", 0.0))
        call_id = getattr(event, "call_id", "")
        if kind == "call_started":
            found = self.policy.match_call(call_id, (event.caller, event.callee), ts)
            e2e = any(k in event.sdp_summary.lower() for k in ("zrtp", "dtls-e2e"))
            for w in found:
                if w.iri:
                    self.policy.iri(w, call_id, "BEGIN", ts, caller=event.caller,
                                    callee=event.callee, media=event.sdp_summary)  # fmt: skip
            if found and e2e:
                self.policy.cc_tap(call_id, ts, e2e_encrypted=True)
        elif kind in ("call_answered", "call_ended"):
            for w in self.policy.calls.get(call_id, []):
                if w.iri and w.active(ts):
                    extra = {"status": event.status} if kind == "call_ended" else {}
                    self.policy.iri(w, call_id, "CONTINUE" if kind == "call_answered" else "END",
                                    ts, **extra)  # fmt: skip
            if kind == "call_ended":
                self.policy.calls.pop(call_id, None)
        elif kind == "registration":
            for w in self.policy.warrants.matching({self.policy._pn(event.aor)} - {""}, ts):
                if w.iri:
                    self.policy.iri(w, "", "REPORT", ts, registration=event.reason,
                                    aor=event.aor)  # fmt: skip
