"""Interop: baresip (mediaenc=srtp-mand) calls a socket of ours; we answer its real SDES offer
with our engine and check the keys both ways with SRTP:

* we decrypt baresip's SRTP with the key from its offer (pylibsrtp), and
* baresip decrypts ours with the key from our answer: its log shows no decrypt failure, while
  a control run with a wrong key makes it log "failed to decrypt".
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from pylibsrtp import Policy, Session

from callward.sdp import (
    Fingerprint,
    LocalMedia,
    OAState,
    OfferAnswerSession,
    SecurityMode,
    SecurityPolicy,
    Setup,
    choose_security,
    create_answer,
    negotiate,
    parse_sdp,
    summary,
)
from peers import baresip_config, free_port, silence_wav, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def _start_baresip(
    cfg: Path,
    target_port: int | None,
    account: str = "mediaenc=srtp-mand",
    sip_port: int | None = None,
) -> subprocess.Popen[bytes]:
    baresip_config(
        cfg,
        sip_port=sip_port or free_port(),
        modules=["g711.so", "srtp.so", "dtls_srtp.so", "aufile.so"],
        account=f"<sip:alice@127.0.0.1>;regint=0;{account}",
        settings=["poll_method epoll", "net_interface 127.0.0.1",
                  f"audio_player aufile,{cfg / 'out.wav'}", f"audio_source aufile,{cfg / 'in.wav'}"],
    )  # fmt: skip
    silence_wav(cfg / "in.wav", 3)  # 3 s of 8 kHz silence to send
    dial = ["-e", f"/dial sip:bob@127.0.0.1:{target_port}"] if target_port else []
    return subprocess.Popen(
        ["baresip", "-f", str(cfg), *dial],
        stdin=subprocess.DEVNULL,
        stdout=(cfg / "log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def _call(cfg: Path, corrupt_our_key: bool) -> tuple[str, int, str]:
    """One call; returns (our answer summary, packets of theirs we decrypted, baresip log)."""
    sip, rtp = _udp(), _udp()
    proc = _start_baresip(cfg, sip.getsockname()[1])
    try:
        sip.settimeout(15)
        data, addr = sip.recvfrom(65535)
        head, body = data.split(b"\r\n\r\n", 1)
        offer = parse_sdp(body, strict=True)  # a real peer's offer passes strict mode
        answer = create_answer(offer, LocalMedia("127.0.0.1", (rtp.getsockname()[1],)))
        (stream,) = negotiate(offer, answer, we_offered=False)
        assert stream.security is SecurityMode.SDES_SRTP
        assert stream.remote_crypto is not None and stream.local_crypto is not None
        lines = head.decode().split("\r\n")

        def hdr(name: str) -> list[str]:
            return [h for h in lines if h.lower().startswith(name.lower() + ":")]

        sdp = bytes(answer)
        response = "\r\n".join(
            [
                "SIP/2.0 200 OK",
                *hdr("Via"),
                *hdr("From"),
                hdr("To")[0] + ";tag=cw-sdp",
                *hdr("Call-ID"),
                *hdr("CSeq"),
                f"Contact: <sip:bob@127.0.0.1:{sip.getsockname()[1]}>",
                "Content-Type: application/sdp",
                f"Content-Length: {len(sdp)}",
                "",
                "",
            ]
        ).encode()
        sip.sendto(response + sdp, addr)
        profile = {
            "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
        }[stream.remote_crypto.suite]
        rx = Session(
            Policy(
                key=stream.remote_crypto.keys[0].key_salt,
                ssrc_type=Policy.SSRC_ANY_INBOUND,
                srtp_profile=profile,
            )
        )
        our_key = stream.local_crypto.keys[0].key_salt
        tx = Session(
            Policy(
                key=bytes(len(our_key)) if corrupt_our_key else our_key,
                ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=profile,
            )
        )
        decrypted = 0
        rtp.settimeout(0.02)
        for seq in range(100):  # 2 s of 20 ms PCMU frames (0xFF = μ-law silence)
            pkt = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x0C0FFEE) + b"\xff" * 160
            rtp.sendto(tx.protect(pkt), (stream.remote_address, stream.remote_port))
            try:
                packet, _ = rtp.recvfrom(2048)
            except TimeoutError:
                continue
            rx.unprotect(packet)  # raises if baresip's key is not the one it offered
            decrypted += 1
        time.sleep(0.2)
        return summary(answer), decrypted, (cfg / "log").read_text(errors="replace")
    finally:
        stop(proc)
        sip.close()
        rtp.close()


def test_baresip_sdes_call(tmp_path: Path) -> None:
    if shutil.which("baresip") is None:
        pytest.skip("why: baresip not installed")
    text, decrypted, log = _call(tmp_path / "good", corrupt_our_key=False)
    assert text == "PCMU/8000 srtp-sdes"
    assert "Call established" in log
    assert decrypted >= 20
    assert "failed to decrypt" not in log
    # Control: the same call with a wrong key on our side must be noticed by baresip.
    _, _, bad_log = _call(tmp_path / "bad", corrupt_our_key=True)
    assert "failed to decrypt" in bad_log


def test_baresip_dtls_offer_is_chosen_as_dtls(tmp_path: Path) -> None:
    if shutil.which("baresip") is None:
        pytest.skip("why: baresip not installed")
    sip = _udp()
    proc = _start_baresip(tmp_path, sip.getsockname()[1], account="mediaenc=dtls_srtp")
    try:
        sip.settimeout(15)
        data, _ = sip.recvfrom(65535)
    finally:
        stop(proc)
        sip.close()
    offer = parse_sdp(data.split(b"\r\n\r\n", 1)[1], strict=True)
    choice = choose_security(offer, SecurityPolicy())
    assert choice.mode is SecurityMode.DTLS_SRTP
    assert offer.media[0].proto.startswith("UDP/TLS/RTP/SAVP")
    assert choice.remote_fingerprints and choice.remote_setup is Setup.ACTPASS
    fp = Fingerprint("sha-256", ":".join(["AA"] * 32))
    answer = create_answer(offer, LocalMedia("127.0.0.1", (40000,), fingerprint=fp))
    assert answer.media[0].attribute("setup") == "active"


def test_baresip_answers_our_offer(tmp_path: Path) -> None:
    """baresip (auto-answer) takes our SDES offer; we read its answer with the session."""
    if shutil.which("baresip") is None:
        pytest.skip("why: baresip not installed")
    bport = free_port()
    proc = _start_baresip(
        tmp_path, None, account="mediaenc=srtp-mand;answermode=auto", sip_port=bport
    )
    sip = _udp()
    try:
        session = OfferAnswerSession(LocalMedia("127.0.0.1", (free_port(),)))
        offer = bytes(session.create_offer())
        me = sip.getsockname()[1]
        invite = (
            f"INVITE sip:alice@127.0.0.1:{bport} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-cwsdp1;rport\r\n"
            "From: <sip:carol@127.0.0.1>;tag=cw1\r\nTo: <sip:alice@127.0.0.1>\r\n"
            "Call-ID: cw-sdp-interop-1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:carol@127.0.0.1:{me}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(offer)}\r\n\r\n"
        ).encode() + offer
        sip.settimeout(3)
        final = b""
        for _ in range(10):  # baresip may need a moment to bind: retransmit like Timer A
            sip.sendto(invite, ("127.0.0.1", bport))
            try:
                while not final:
                    data, _ = sip.recvfrom(65535)
                    if data.startswith(b"SIP/2.0 2"):
                        final = data
            except TimeoutError:
                continue
            break
        assert final.startswith(b"SIP/2.0 200"), final[:80]
        streams = session.receive_answer(parse_sdp(final.split(b"\r\n\r\n", 1)[1], strict=True))
        (stream,) = streams
        assert stream.security is SecurityMode.SDES_SRTP
        assert stream.codec.name == "PCMU" and stream.remote_address == "127.0.0.1"
        assert stream.local_crypto is not None and stream.remote_crypto is not None
        assert stream.local_crypto.tag == stream.remote_crypto.tag
        assert session.state is OAState.STABLE
    finally:
        stop(proc)
        sip.close()
