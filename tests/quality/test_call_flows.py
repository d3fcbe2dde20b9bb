"""Call verdicts from whole transaction histories (RFC 3261 flows written by hand): digest
challenges, redirects, forking, CANCEL races, re-INVITE glare, early media. The real-peer
versions of these flows are in tests/interop/test_quality_call_flows.py."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from callward.cli import app
from callward.quality.report import analyze_capture
from callward.quality.synth import RtpSpec, merge, rtp_frames, sdp_body, sip_frame, write_pcap

A, B = "192.0.2.10", "192.0.2.20"
T0 = 1_700_000_000.0
OFFER = sdp_body(A, 30000)
ANSWER = sdp_body(B, 31000)


def _msg(start: str, cseq: str, cid: str, to_tag: str = "", body: str = "", extra: str = "") -> str:
    tag = f";tag={to_tag}" if to_tag else ""
    ctype = "Content-Type: application/sdp\n" if body else ""
    return (
        f"{start}\nVia: SIP/2.0/UDP {A}:5060;branch=z9hG4bK{cseq.split()[0]}x\n"
        f"From: <sip:alice@example.invalid>;tag=a1\nTo: <sip:bob@example.invalid>{tag}\n"
        f"Call-ID: {cid}\nCSeq: {cseq}\nMax-Forwards: 70\nContact: <sip:x@{A}:5060>\n"
        f"{extra}{ctype}\n{body}"
    )


def _flow(cid: str, steps: list[tuple]) -> list:
    """steps: (seconds after T0, 'ab' or 'ba', start line, CSeq, To tag, body, extra)."""
    out = []
    for t, way, start, cseq, tag, *rest in steps:
        body = rest[0] if rest else ""
        extra = rest[1] if len(rest) > 1 else ""
        src, dst = (A, B) if way == "ab" else (B, A)
        out.append(
            sip_frame(T0 + t, src, 5060, dst, 5060, _msg(start, cseq, cid, tag, body, extra))
        )
    return out


INV = "INVITE sip:bob@example.invalid SIP/2.0"
ACK = "ACK sip:bob@example.invalid SIP/2.0"
BYE = "BYE sip:bob@example.invalid SIP/2.0"


def _media(start: float = 1.1, count: int = 100, dport: int = 31000) -> list:
    fwd = rtp_frames(RtpSpec(src=A, sport=30000, dst=B, dport=dport, start=T0 + start, count=count))
    rev = rtp_frames(RtpSpec(src=B, sport=dport, dst=A, dport=30000, ssrc=0x5151,
                             start=T0 + start, count=count))  # fmt: skip
    return fwd + rev


def _analyze(tmp_path: Path, frames: list) -> dict:
    p = tmp_path / "flow.pcap"
    write_pcap(p, merge(frames))
    return analyze_capture(p).as_dict()["calls"][0]


def test_digest_challenge_then_success_is_answered(tmp_path: Path) -> None:
    sip = _flow("auth", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.01, "ba", "SIP/2.0 407 Proxy Authentication Required", "1 INVITE", "p1"),
        (0.02, "ab", ACK, "1 ACK", "p1"),
        (0.03, "ab", INV, "2 INVITE", "", OFFER, "Proxy-Authorization: Digest username=\"a\"\n"),
        (0.2, "ba", "SIP/2.0 180 Ringing", "2 INVITE", "b1"),
        (1.0, "ba", "SIP/2.0 200 OK", "2 INVITE", "b1", ANSWER),
        (1.01, "ab", ACK, "2 ACK", "b1"),
        (3.2, "ab", BYE, "3 BYE", "b1"),
        (3.21, "ba", "SIP/2.0 200 OK", "3 BYE", "b1"),
    ])  # fmt: skip
    c = _analyze(tmp_path, sip + _media())
    assert (c["outcome"], c["final_status"], c["challenges"]) == ("answered", 200, 1)
    assert c["attempts"] == [{"cseq": 1, "status": 407}, {"cseq": 2, "status": 200}]
    assert c["problems"] == [] and len(c["streams"]) == 2


def test_unanswered_challenge_is_an_auth_failure(tmp_path: Path) -> None:
    sip = _flow("noauth", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.01, "ba", "SIP/2.0 401 Unauthorized", "1 INVITE", "p1"),
        (0.02, "ab", ACK, "1 ACK", "p1"),
    ])  # fmt: skip
    c = _analyze(tmp_path, sip)
    assert c["outcome"] == "failed"
    assert c["problems"] == [{"kind": "call_failed", "detail": "INVITE answered 401",
                              "cause": "auth_failed"}]  # fmt: skip


def test_redirect_then_retry_is_answered_and_redirect_alone_is_not_a_failure(
    tmp_path: Path,
) -> None:
    redirected = [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.01, "ba", "SIP/2.0 302 Moved Temporarily", "1 INVITE", "r1", "",
         "Contact: <sip:bob@198.51.100.7>\n"),
        (0.02, "ab", ACK, "1 ACK", "r1"),
    ]  # fmt: skip
    c = _analyze(tmp_path, _flow("r-only", redirected))
    assert (c["outcome"], c["final_status"], c["problems"]) == ("redirected", 302, [])
    retried = [
        *redirected,
        (0.05, "ab", INV, "2 INVITE", "", OFFER),
        (0.9, "ba", "SIP/2.0 200 OK", "2 INVITE", "b1", ANSWER),
        (0.91, "ab", ACK, "2 ACK", "b1"),
    ]  # fmt: skip
    c = _analyze(tmp_path, _flow("r-retry", retried) + _media())
    assert (c["outcome"], c["final_status"], c["problems"]) == ("answered", 200, [])


def test_forking_with_early_media_and_two_2xx(tmp_path: Path) -> None:
    # Fork x rings, fork y plays early media (183 + SDP) and answers with a 2xx without SDP
    # (the early answer stands); fork x answers too (a forked 2xx the caller ACKs and BYEs).
    sip = _flow("fork", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.1, "ba", "SIP/2.0 180 Ringing", "1 INVITE", "x"),
        (0.2, "ba", "SIP/2.0 183 Session Progress", "1 INVITE", "y", ANSWER),
        (1.0, "ba", "SIP/2.0 200 OK", "1 INVITE", "y"),
        (1.01, "ab", ACK, "1 ACK", "y"),
        (1.05, "ba", "SIP/2.0 200 OK", "1 INVITE", "x", sdp_body(B, 32000)),
        (1.06, "ab", ACK, "1 ACK", "x"),
        (1.07, "ab", BYE, "2 BYE", "x"),
    ])  # fmt: skip
    c = _analyze(tmp_path, sip + _media(start=0.3))
    assert (c["outcome"], c["forks"], c["early_media"]) == ("answered", 2, True)
    assert c["callee_media"] == f"{B}:31000" and c["problems"] == []


def test_cancel_before_answer_and_cancel_race(tmp_path: Path) -> None:
    cancelled = _flow("cancel", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.1, "ba", "SIP/2.0 180 Ringing", "1 INVITE", "b1"),
        (2.0, "ab", "CANCEL sip:bob@example.invalid SIP/2.0", "1 CANCEL", ""),
        (2.01, "ba", "SIP/2.0 200 OK", "1 CANCEL", "b1"),
        (2.02, "ba", "SIP/2.0 487 Request Terminated", "1 INVITE", "b1"),
        (2.03, "ab", ACK, "1 ACK", "b1"),
    ])  # fmt: skip
    c = _analyze(tmp_path, cancelled)
    assert (c["outcome"], c["final_status"], c["cancelled"], c["problems"]) == (
        "cancelled",
        487,
        True,
        [],
    )
    # The callee's 200 crossed the CANCEL: the call was answered (and then hung up).
    race = _flow("race", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.1, "ba", "SIP/2.0 180 Ringing", "1 INVITE", "b1"),
        (2.0, "ab", "CANCEL sip:bob@example.invalid SIP/2.0", "1 CANCEL", ""),
        (2.0005, "ba", "SIP/2.0 200 OK", "1 INVITE", "b1", ANSWER),
        (2.01, "ba", "SIP/2.0 200 OK", "1 CANCEL", "b1"),
        (2.02, "ab", ACK, "1 ACK", "b1"),
        (2.03, "ab", BYE, "2 BYE", "b1"),
    ])  # fmt: skip
    c = _analyze(tmp_path, race)
    assert (c["outcome"], c["final_status"], c["cancelled"]) == ("answered", 200, True)
    assert all(p["kind"] != "call_failed" for p in c["problems"])


def test_reinvite_glare_and_update_keep_the_call_answered(tmp_path: Path) -> None:
    moved = sdp_body(B, 31500)
    sip = _flow("glare", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.5, "ba", "SIP/2.0 200 OK", "1 INVITE", "b1", ANSWER),
        (0.51, "ab", ACK, "1 ACK", "b1"),
        (1.5, "ab", INV, "2 INVITE", "b1", OFFER),  # both re-INVITE at once: glare
        (1.5, "ba", INV.replace("bob", "alice"), "7 INVITE", "b1", ANSWER),
        (1.51, "ba", "SIP/2.0 491 Request Pending", "2 INVITE", "b1"),
        (1.51, "ab", "SIP/2.0 491 Request Pending", "7 INVITE", "b1"),
        (3.0, "ba", INV.replace("bob", "alice"), "8 INVITE", "b1", moved),  # callee moves media
        (3.01, "ab", "SIP/2.0 200 OK", "8 INVITE", "b1", OFFER),
        (3.5, "ab", "UPDATE sip:bob@example.invalid SIP/2.0", "3 UPDATE", "b1"),
        (3.51, "ba", "SIP/2.0 200 OK", "3 UPDATE", "b1"),
        (5.0, "ab", BYE, "4 BYE", "b1"),
    ])  # fmt: skip
    frames = sip + _media(start=0.6, count=120) + _media(start=3.1, count=80, dport=31500)
    c = _analyze(tmp_path, frames)
    assert (c["outcome"], c["final_status"]) == ("answered", 200)
    assert (c["reinvites"], c["updates"], c["glare"]) == (3, 1, 2)
    assert len(c["streams"]) == 4  # the moved media belongs to the call too
    assert c["problems"] == []


def test_early_media_then_busy(tmp_path: Path) -> None:
    sip = _flow("busy", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.1, "ba", "SIP/2.0 183 Session Progress", "1 INVITE", "b1", ANSWER),
        (3.0, "ba", "SIP/2.0 486 Busy Here", "1 INVITE", "b1"),
        (3.01, "ab", ACK, "1 ACK", "b1"),
    ])  # fmt: skip
    early = rtp_frames(RtpSpec(src=B, sport=31000, dst=A, dport=30000, start=T0 + 0.2, count=120))
    c = _analyze(tmp_path, sip + early)
    assert (c["outcome"], c["early_media"]) == ("failed", True)
    assert c["problems"][0]["cause"] == "busy" and len(c["streams"]) == 1


def test_cli_exit_code_follows_the_verdict(tmp_path: Path) -> None:
    p = tmp_path / "auth.pcap"
    write_pcap(p, merge(_flow("auth-cli", [
        (0.0, "ab", INV, "1 INVITE", "", OFFER),
        (0.01, "ba", "SIP/2.0 401 Unauthorized", "1 INVITE", "p1"),
        (0.03, "ab", INV, "2 INVITE", "", OFFER),
        (1.0, "ba", "SIP/2.0 200 OK", "2 INVITE", "b1", ANSWER),
        (3.0, "ab", BYE, "3 BYE", "b1"),
    ]), _media()))  # fmt: skip
    res = CliRunner().invoke(app, ["analyze", "--json", str(p)])
    assert res.exit_code == 0, res.stdout
    assert json.loads(res.stdout)["calls"][0]["outcome"] == "answered"
