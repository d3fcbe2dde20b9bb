"""The privacy layer on the serve path, real sockets: ``open_runtime`` + the ng relay daemon
consult the tap policy when a call's media starts. With a valid warrant the mediation endpoint
(loopback TCP) receives IRI (X2) and CC (X3); with an expired one it receives nothing. A call in
an all-party jurisdiction where one party refused is not recorded; when all consent it is, and
recording stops when consent is withdrawn mid-call."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from tests.privacy.test_intercept import Mediation

from callward.config import load_config
from callward.events import CallEnded, CallStarted
from callward.ng import NgCommand, NgRequest
from callward.ng.transport import NgConnection
from callward.privacy.intercept import LI_ROLE, PduType, iri_record
from callward.rtp.packet import RtpPacket
from callward.runtime import open_runtime
from callward.sdp import parse_sdp
from peers import free_port

pytestmark = pytest.mark.timeout(60)
TARGET = "+447700900666"
A, B = f"sip:{TARGET}@ims.example", "tel:+447700900777"


def _sdp(port: int) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )


def _config(tmp_path: Path, mediation_port: int, **privacy: object):
    ng = free_port()
    lo = 43000 + (ng % 50) * 20
    p = {"li_mediation": f"127.0.0.1:{mediation_port}", **privacy}
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(
        f"storage: {{data_dir: {tmp_path / 'var'}}}\n"
        f"media: {{ng_listen: '127.0.0.1:{ng}', rtp_port_min: {lo}, rtp_port_max: {lo + 19}}}\n"
        f"edge: {{subscribers: 'sqlite:{tmp_path / 'subs.sqlite'}'}}\n"
        f"privacy: {json.dumps(p)}\n"
    )
    return load_config(cfg), ng


async def _call(rt, ng: int, call_id: str, packets: int = 20, between=None) -> None:
    import time

    now = time.time()
    await rt.bus.publish(CallStarted(ts=now, node="edge-1", seq=1, call_id=call_id, caller=A,
                                     callee=B, sdp_summary="PCMU rtp"))  # fmt: skip
    a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    for x in (a, b):
        x.bind(("127.0.0.1", 0))
        x.setblocking(False)
    conn = await NgConnection.open(("127.0.0.1", ng))
    loop = asyncio.get_running_loop()
    try:
        r = await conn.request(NgRequest(NgCommand.OFFER, call_id=call_id, from_tag="A",
                                         sdp=_sdp(a.getsockname()[1])))  # fmt: skip
        r = await conn.request(NgRequest(NgCommand.ANSWER, call_id=call_id, from_tag="A",
                                         to_tag="B", sdp=_sdp(b.getsockname()[1])))  # fmt: skip
        port_a = parse_sdp(r.sdp).media[0].port
        for seq in range(packets):
            if between is not None and seq == packets // 2:
                await between()
                await asyncio.sleep(1.1)  # the recording re-checks consent once a second
            a.sendto(bytes(RtpPacket(0, seq, seq * 160, 1, b"\x01" * 160)), ("127.0.0.1", port_a))
            await asyncio.wait_for(loop.sock_recv(b, 2048), 2)
        await conn.request(NgRequest(NgCommand.DELETE, call_id=call_id, from_tag="A"))
    finally:
        conn.close()
        a.close()
        b.close()
    await rt.bus.publish(CallEnded(ts=time.time(), node="edge-1", seq=2, call_id=call_id))


async def _li_run(tmp_path: Path, valid: bool) -> Mediation:
    import time

    med = Mediation()
    cfg, ng = _config(tmp_path, await med.start())
    rt = await open_runtime(cfg)
    try:
        await rt.start_relay(call_events=False)
        rt.start_privacy()
        reg = rt.privacy.intercept.warrants
        now = time.time()
        span = (now - 3600, now + 3600) if valid else (now - 7200, now - 3600)
        reg.provision(actor="o1", role=LI_ROLE, liid="LIID-7", targets=[TARGET], iri=True,
                      cc=True, valid_from=span[0], valid_to=span[1], authority="court")  # fmt: skip
        reg.activate("LIID-7", actor="o2", role=LI_ROLE)
        await _call(rt, ng, "li-call-1")
        await rt.privacy.mediation.flush()
        await asyncio.sleep(0.2)
        assert rt.privacy.retention.runs >= 1  # the retention scheduler runs in serve too
        # nothing about the interception reached the CDR access trail other roles read
        assert not [e for e in rt.records.audit.entries() if e.action in ("warrant", "intercept")]
    finally:
        await rt.close()
        med.server.close()
    return med


async def test_valid_warrant_iri_and_cc_reach_the_mediation_endpoint(tmp_path: Path) -> None:
    med = await _li_run(tmp_path, valid=True)
    x2 = [iri_record(p)["type"] for p in med.pdus if p.pdu_type is PduType.X2]
    x3 = [p.payload for p in med.pdus if p.pdu_type is PduType.X3]
    assert x2 == ["BEGIN", "END"]
    assert len(x3) == 20 and all(p[12:] == b"\x01" * 160 for p in x3)


async def test_expired_warrant_nothing_reaches_the_mediation_endpoint(tmp_path: Path) -> None:
    med = await _li_run(tmp_path, valid=False)
    assert med.pdus == []


async def _rec_run(tmp_path: Path, consents: dict[str, bool], withdraw: bool = False):
    import time

    med = Mediation()
    cfg, ng = _config(tmp_path, await med.start(), record_calls=True,
                      recording_jurisdiction="US-CA")  # fmt: skip
    rt = await open_runtime(cfg)
    try:
        await rt.start_relay(call_events=False)
        consent = rt.privacy.consent
        for who, given in consents.items():
            consent.record(who, "US-CA", given=given, evidence="ivr:7", actor="ivr",
                           now=time.time() - 5)  # fmt: skip

        async def withdraw_b() -> None:
            consent.record(B, "US-CA", given=False, evidence="app", actor="app", now=time.time())

        await _call(rt, ng, "rec-1", between=withdraw_b if withdraw else None)
        recs = list((tmp_path / "var" / "recordings").glob("*.rtp"))
        actions = [(e.action, e.reason) for e in rt.records.audit.entries()]
    finally:
        await rt.close()
        med.server.close()
    return recs, actions


async def test_all_party_one_refusal_no_recording(tmp_path: Path) -> None:
    recs, actions = await _rec_run(tmp_path, {A: True, B: False})
    assert recs == [] and ("recording", "recording refused") in actions


async def test_all_consent_records_and_withdrawal_stops(tmp_path: Path) -> None:
    recs, actions = await _rec_run(tmp_path, {A: True, B: True}, withdraw=True)
    (rec,) = recs
    head, _, body = rec.read_bytes().partition(b"\n")
    assert json.loads(head)["announcement"] is True  # California: announce before recording
    n = body.count(b"\x01" * 160)
    assert 0 < n < 20  # stopped after the withdrawal, not at the end of the call
    assert ("recording", "recording stopped: consent withdrawn") in actions
