"""Lawful interception: dual-control warrants, IRI (X2) from bus events and CC (X3) from the
relay tap delivered over TCP to a mediation endpoint for matched targets under a valid warrant
only; expired warrant = nothing delivered; other roles see nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from callward.errors import PolicyError
from callward.events import CallAnswered, CallEnded, CallStarted, InProcessBus
from callward.privacy import Pseudonymizer
from callward.privacy.intercept import (
    LI_ROLE,
    InterceptPolicy,
    IriSubscriber,
    Pdu,
    PduType,
    WarrantRegistry,
    iri_record,
)
from callward.privacy.mediation import MediationClient
from callward.privacy.x2x3 import split_pdus
from callward.records.audit import AuditLog

NOW = 1_800_000_000.0
TARGET = "+447700900666"
OTHER = "tel:+447700900777"
RTP = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9]) + b"\xd5" * 160


class Mediation:
    """A mediation endpoint on a loopback TCP port that parses every PDU it receives."""

    def __init__(self) -> None:
        self.buf = b""
        self.pdus: list[Pdu] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            self.buf += data
            got, self.buf = split_pdus(self.buf)
            self.pdus += got


def _registry(tmp_path: Path):
    li_audit = AuditLog(tmp_path / "li" / "audit.db")
    pseudo = Pseudonymizer(b"k" * 32)
    return WarrantRegistry(tmp_path / "li" / "warrants.db", pseudo, li_audit), li_audit, pseudo


def _warrant(reg: WarrantRegistry, liid: str, start: float, end: float, cc: bool = True):
    reg.provision(
        actor="officer-1",
        role=LI_ROLE,
        liid=liid,
        targets=[f"tel:{TARGET}"],
        iri=True,
        cc=cc,
        valid_from=start,
        valid_to=end,
        authority="Court X, 12/26",
    )
    return reg.activate(liid, actor="officer-2", role=LI_ROLE)


async def _call(bus: InProcessBus, policy: InterceptPolicy, t: float, sdp: str = "PCMU srtp"):
    await bus.publish(CallStarted(ts=t, node="e", seq=1, call_id="c-1",
                                  caller=f"sip:{TARGET}@ims.example", callee=OTHER,
                                  sdp_summary=sdp))  # fmt: skip
    tap = policy.cc_tap("c-1", t + 1, e2e_encrypted="zrtp" in sdp)
    await bus.publish(CallAnswered(ts=t + 1, node="e", seq=2, call_id="c-1"))
    if tap is not None:
        for i in range(5):
            tap.on_packet("c-1", "a" if i % 2 else "b", RTP, rtcp=False, now=t + 2 + i)
    await bus.publish(CallEnded(ts=t + 10, node="e", seq=3, call_id="c-1", status=200))
    return tap


async def _run(tmp_path: Path, start: float, end: float, sdp: str = "PCMU srtp", cc=True):
    reg, li_audit, pseudo = _registry(tmp_path)
    _warrant(reg, "LIID-1", start, end, cc)
    med = Mediation()
    port = await med.start()
    client = MediationClient("127.0.0.1", port)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    policy = InterceptPolicy(reg, client.deliver, li_audit, pseudo)
    bus = InProcessBus()
    bus.subscribe(IriSubscriber(policy).handle)
    await _call(bus, policy, NOW, sdp)
    # a call between two non-targets is never intercepted
    await bus.publish(CallStarted(ts=NOW, node="e", seq=9, call_id="c-2", caller=OTHER,
                                  callee="tel:+447700900888"))  # fmt: skip
    await client.flush()
    await asyncio.sleep(0.1)
    stop.set()
    await task
    med.server.close()
    return med, reg, li_audit


async def test_valid_warrant_delivers_iri_and_cc_for_the_target_only(tmp_path: Path) -> None:
    med, _, li_audit = await _run(tmp_path, NOW - 3600, NOW + 3600)
    x2 = [iri_record(p) for p in med.pdus if p.pdu_type is PduType.X2]
    x3 = [p.payload for p in med.pdus if p.pdu_type is PduType.X3]
    assert [r["type"] for r in x2] == ["BEGIN", "CONTINUE", "END"]
    assert all(r["liid"] == "LIID-1" and r["call_id"] == "c-1" for r in x2)
    assert x3 == [RTP] * 5
    assert len({p.correlation for p in med.pdus}) == 1  # one call, one correlation id
    assert [e.action for e in li_audit.entries()] == ["warrant", "warrant", "intercept"]


async def test_expired_warrant_delivers_nothing(tmp_path: Path) -> None:
    med, *_ = await _run(tmp_path, NOW - 7200, NOW - 3600)
    assert med.pdus == []
    med, *_ = await _run(tmp_path / "future", NOW + 60, NOW + 3600)
    assert med.pdus == []


async def test_end_to_end_encrypted_call_reports_content_unavailable(tmp_path: Path) -> None:
    med, *_ = await _run(tmp_path, NOW - 3600, NOW + 3600, sdp="opus zrtp")
    kinds = [iri_record(p).get("cc") for p in med.pdus if p.pdu_type is PduType.X2]
    assert "content-unavailable" in kinds
    assert not [p.payload for p in med.pdus if p.pdu_type is PduType.X3]


def test_dual_control_roles_and_a_trail_other_roles_cannot_see(tmp_path: Path) -> None:
    reg, li_audit, _ = _registry(tmp_path)
    with pytest.raises(PolicyError, match="li-officer"):
        reg.provision(actor="dpo", role="dpo", liid="L", targets=[TARGET], iri=True, cc=False,
                      valid_from=NOW, valid_to=NOW + 1, authority="A")  # fmt: skip
    reg.provision(actor="o1", role=LI_ROLE, liid="L", targets=[TARGET], iri=True, cc=False,
                  valid_from=NOW, valid_to=NOW + 10, authority="A")  # fmt: skip
    with pytest.raises(PolicyError, match="dual control"):
        reg.activate("L", actor="o1", role=LI_ROLE)
    assert reg.matching([reg.pseudo.pseudonym(TARGET)], NOW + 1) == []  # not active yet
    reg.activate("L", actor="o2", role=LI_ROLE)
    assert len(reg.matching([reg.pseudo.pseudonym(TARGET)], NOW + 1)) == 1
    for role in ("viewer", "investigator", "dpo"):
        with pytest.raises(PolicyError):
            reg.all(actor="x", role=role)
    assert len(reg.all(actor="o1", role=LI_ROLE)) == 1
    raw = (tmp_path / "li" / "warrants.db").read_bytes()
    assert TARGET[1:].encode() not in raw  # targets stored as pseudonyms
    assert li_audit.path != Path(tmp_path / "audit.db")
