"""Interop: Wireshark's SDP dissector (tshark) reads our offer and answer as we meant them,
including the SDES master key / master salt split (RFC 4568 §6.1, RFC 7714 §14.2)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from callward.sdp import (
    LocalMedia,
    SecurityPolicy,
    create_answer,
    create_offer,
    media_crypto,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


def _pcap(datagrams: list[bytes], path: Path) -> None:
    """A classic pcap with LINKTYPE_RAW (101): IPv4/UDP 127.0.0.1:5062 -> :5060."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for i, payload in enumerate(datagrams):
        udp = struct.pack("!HHHH", 5062, 5060, 8 + len(payload), 0) + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
            bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
        ) + udp  # fmt: skip
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(ip), len(ip)) + ip)
    path.write_bytes(b"".join(out))


def _sip(first_line: str, body: bytes) -> bytes:
    head = (
        f"{first_line}\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-cw-tshark\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: cw-tshark\r\n"
        "CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_tshark_reads_our_offer_and_answer(tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("why: tshark not installed")
    offer = create_offer(LocalMedia("127.0.0.1", (40000,)), rng=lambda n: bytes(range(n)))
    answer = create_answer(
        offer,
        LocalMedia("127.0.0.1", (50000,)),
        security=SecurityPolicy(sdes_suites=("AEAD_AES_128_GCM",)),
        rng=lambda n: bytes(range(100, 100 + n)),
    )
    pcap = tmp_path / "sdp.pcap"
    _pcap(
        [
            _sip("INVITE sip:b@127.0.0.1 SIP/2.0", bytes(offer)),
            _sip("SIP/2.0 200 OK", bytes(answer)),
        ],
        pcap,
    )
    fields = [
        "sdp.media.port",
        "sdp.media.proto",
        "sdp.mime.type",
        "sdp.sample_rate",
        "sdp.connection_info.address",
        "sdp.crypto.tag",
        "sdp.crypto.crypto_suite",
        "sdp.crypto.master_key",
        "sdp.crypto.master_salt",
        "sdp.key_and_salt",
    ]
    cmd = ["tshark", "-r", str(pcap), "-Y", "sdp", "-T", "fields", "-E", "occurrence=a"]
    cmd += ["-E", "aggregator=|", "-E", "separator=/t"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=45, check=True)
    rows = [dict(zip(fields, ln.split("\t"), strict=True)) for ln in proc.stdout.splitlines()]
    assert len(rows) == 2
    o, a = rows
    assert (o["sdp.media.port"], o["sdp.media.proto"]) == ("40000", "RTP/SAVP")
    assert o["sdp.connection_info.address"] == "127.0.0.1"
    # rtpmap as tshark decodes it: encoding names and clock rates in our policy's order.
    assert o["sdp.mime.type"].split("|") == [
        "PCMU", "PCMA", "opus", "G729", "telephone-event", "telephone-event", "CN"
    ]  # fmt: skip
    assert o["sdp.sample_rate"].split("|") == [
        "8000", "8000", "48000", "8000", "8000", "48000", "8000"
    ]  # fmt: skip
    assert o["sdp.crypto.crypto_suite"].split("|")[0] == "AES_CM_128_HMAC_SHA1_80"
    ours = media_crypto(offer.media[0])
    assert o["sdp.crypto.master_key"].split("|")[0] == ours[0].master_key.hex()
    assert o["sdp.crypto.master_salt"].split("|")[0] == ours[0].master_salt.hex()
    # The answer picked the GCM line (tag 2 in our offer) and gave a 16+12 byte key of its own.
    assert (a["sdp.media.port"], a["sdp.crypto.tag"]) == ("50000", "2")
    assert a["sdp.crypto.crypto_suite"] == "AEAD_AES_128_GCM"
    # tshark does not split GCM keys; its decoded key||salt is the 28 bytes we generated.
    assert a["sdp.key_and_salt"] == bytes(range(100, 128)).hex()
    (ans,) = media_crypto(answer.media[0])
    assert (ans.master_key, ans.master_salt) == (bytes(range(100, 116)), bytes(range(116, 128)))
    assert a["sdp.mime.type"].split("|") == ["PCMU", "telephone-event", "CN"]
