"""Interop: SIPp's built-in ``uac`` scenario sends its INVITE to a socket of ours; its SDP
must parse in strict mode, match sdp-transform's reading, and get a PCMU answer on a trusted
plain-RTP leg (and a 488 with Warning 302 on an untrusted one)."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest
import sdp_transform

from callward.errors import SdpError
from callward.sdp import LocalMedia, SecurityPolicy, create_answer, parse_sdp, summary

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


def _invite_from_sipp(tmp_path: object) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        sipp_port = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(15)
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        cmd = ["sipp", "-sn", "uac", target, "-i", "127.0.0.1", "-p", str(sipp_port)]
        cmd += ["-m", "1", "-nostdin", "-timeout", "10s"]
        proc = subprocess.Popen(
            cmd, cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            data, _ = sock.recvfrom(65535)
        finally:
            proc.kill()
            proc.wait()
    return data


def test_sipp_uac_offer(tmp_path: object) -> None:
    if shutil.which("sipp") is None:
        pytest.skip("why: sipp not installed")
    data = _invite_from_sipp(tmp_path)
    assert data.startswith(b"INVITE ")
    body = data.split(b"\r\n\r\n", 1)[1]
    offer = parse_sdp(body, strict=True)
    ref = sdp_transform.parse(body.decode())
    assert offer.origin.session_version == ref["origin"]["sessionVersion"]
    assert [(m.media, m.port, m.proto) for m in offer.media] == [
        (m["type"], m["port"], m["protocol"]) for m in ref["media"]
    ]
    assert bytes(offer) == body  # SIPp writes canonical SDP: byte-exact round trip
    trusted = SecurityPolicy(allow_plain_rtp=True, trusted_leg=True)
    answer = create_answer(offer, LocalMedia("127.0.0.1", (40000,)), security=trusted)
    assert summary(answer) == "PCMU/8000 rtp"
    with pytest.raises(SdpError) as info:
        create_answer(offer, LocalMedia("127.0.0.1", (40000,)))
    assert info.value.status_hint == 488 and info.value.warning().startswith("302 ")
