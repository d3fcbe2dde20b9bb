"""Headless Chromium's WebRTC stack calls a callward phone through ``callward edge`` over SIP
over secure WebSocket (RFC 7118): the browser's own offer (ICE, DTLS-SRTP, rtcp-mux), a digest
answer to the edge's 407, our phone answering with ICE-lite on its RTP port and DTLS-SRTP
(RFC 5763/5764). Audio flows both ways (the browser's getStats and the phone's counters), and
tshark on the media port sees the DTLS handshake and SRTP both ways. The page is served by the
test (Playwright fulfils its URL) and signals only through the edge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callward.config import CallwardConfig, EdgeConfig
from callward.ua.ice_lite import IceLite
from callward.ua.media import RtpEndpoint
from callward.ua.media_security import secure_media
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent
from peers import CALLWARD_CLI, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
REALM = "callward.local"
EDGE_PORT, PAGE_PORT = 25140, 25141  # mobile12's block
PAGE = f"http://127.0.0.1:{PAGE_PORT}/"
JS = Path(__file__).with_name("webrtc_caller.js")
PACKETS = 60  # audio packets each way the browser must count (1.2 s of 20 ms frames)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",  # loopback only: candidates on 127.0.0.1 too
    # loopback signalling from a loopback page; host candidates without mDNS names
    "--disable-features=LocalNetworkAccessChecks,WebRtcHideLocalIpsWithMdns",
]  # fmt: skip


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "edge.crt", tmp / "edge.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[None]:
    if shutil.which("openssl") is None:
        pytest.skip("why: openssl not installed (test certificate)")
    edge_mod = pytest.importorskip("callward.edge.app")
    subs_mod = pytest.importorskip("callward.edge.subscribers")
    cert, key = _self_signed(tmp_path)
    db = tmp_path / "subs.sqlite"
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"wss:127.0.0.1:{EDGE_PORT}", f"tcp:127.0.0.1:{EDGE_PORT + 2}"],
            realm=REALM, domains=[REALM], subscribers=f"sqlite:{db}", auth_secret="k" * 32,
            algorithms=["SHA-256"], tls_cert=str(cert), tls_key=str(key), max_backlog=5.0,
        )
    )  # fmt: skip
    subscribers = subs_mod.SqliteSubscribers(db)
    for user in ("alice", "bob"):
        subscribers.put(subs_mod.Subscriber.from_password(user, REALM, f"pw-{user}"))
    node = edge_mod.EdgeNode(cfg, subscribers=subscribers)
    await node.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await node.stop()


def _tshark(pcap: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["tshark", "-q", "-i", "lo", "-f", f"udp port {port}", "-w", str(pcap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    while b"Capturing on" not in proc.stderr.read1(4096):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline and proc.poll() is None, "tshark did not start"
    return proc


async def _bob_answers(bob: Phone, rtp: RtpEndpoint, out: dict[str, Any]) -> None:
    call = await bob.next_call(30)
    await call.ring()
    await call.answer()
    stream = call.negotiated()
    assert stream is not None
    dtls = await secure_media(
        rtp, stream, bob.dtls_certificate, allow_plain=False, ice_lite=bob.ice_lite
    )
    assert dtls is not None
    out["security"] = stream.security.value
    out["dtls_client"] = dtls.client
    dest = dtls.peer or (stream.remote_address, stream.remote_port)
    await rtp.send_audio(dest, 150, stream.codec.payload_type)
    out["ended"] = await call.wait_ended(20)
    dtls.close()


async def _browser_calls_bob(async_api: Any) -> dict[str, Any]:
    """Headless Chromium runs the test page: its RTCPeerConnection calls sip:bob through the
    edge over WSS; returns what the page saw (SIP statuses, getStats, DTLS state)."""
    html = f"<!doctype html><title>callward webrtc</title><script>{JS.read_text()}</script>"
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            await page.route(PAGE, lambda route: route.fulfill(body=html, content_type="text/html"))
            await page.goto(PAGE)
            seen: dict[str, Any] = await page.evaluate(
                "cfg => callBob(cfg)",
                {"ws": f"wss://127.0.0.1:{EDGE_PORT}", "user": "alice", "password": "pw-alice",
                 "realm": REALM, "target": f"sip:bob@{REALM}", "packets": PACKETS},
            )  # fmt: skip
            return seen
        finally:
            await browser.close()


def _assert_browser_audio(seen: dict[str, Any]) -> None:
    assert seen["status"] == 200, seen
    assert seen["answerHasIceLite"] and seen["connection"] == "connected", seen
    assert seen["dtls"] == "connected", seen
    assert seen["inbound"] >= PACKETS and seen["outbound"] >= PACKETS, seen
    assert seen["bye"] == 200, seen


def _preconditions() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"why: {CHROMIUM} not installed (apt-get install chromium)")
    if shutil.which("tshark") is None:
        pytest.skip("why: tshark not installed")
    return pytest.importorskip("playwright.async_api", reason="why: playwright not installed")


async def test_chromium_webrtc_calls_our_phone_over_wss_dtls_srtp(
    edge: None, tmp_path: Path
) -> None:
    async_api = _preconditions()
    bob = await Phone.start("bob", transport="tcp", password="pw-bob")
    bob.media_security = "dtls"  # SRTP only, never plain
    bob.ice_lite = IceLite()
    rtp = await RtpEndpoint.open("127.0.0.1")
    bob.media_port = rtp.local_addr[1]
    pcap = tmp_path / "media.pcapng"
    tshark = _tshark(pcap, rtp.local_addr[1])
    phone_side: dict[str, Any] = {}
    try:
        reg = await RegistrationAgent.start(bob, [("127.0.0.1", EDGE_PORT + 2)], domain=REALM)
        await reg.wait_registered(5)
        answering = asyncio.ensure_future(_bob_answers(bob, rtp, phone_side))
        seen = await _browser_calls_bob(async_api)
        await asyncio.wait_for(answering, 20)
    finally:
        await asyncio.sleep(0.3)
        stop(tshark, sig=2)
        rtp.close()
        await bob.close()
    _assert_browser_audio(seen)
    assert phone_side["ended"] == "bye", phone_side
    assert phone_side["security"] == "dtls-srtp"
    assert rtp.counters.packets_received >= PACKETS, "the browser's SRTP, decrypted by us"
    port = str(rtp.local_addr[1])
    rows = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"udp.port=={port},rtp", "-T", "fields",
         "-e", "udp.srcport", "-e", "_ws.col.Protocol", "-e", "dtls.record.content_type"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    dtls = [r for r in rows if "DTLS" in r]
    rtp_out = [r for r in rows if r.startswith(port + "\t") and "RTP" in r.split("\t")[1]]
    rtp_in = [r for r in rows if not r.startswith(port + "\t") and "RTP" in r.split("\t")[1]]
    assert any("22" in r for r in dtls), "tshark sees the DTLS handshake"
    assert len(rtp_out) >= PACKETS and len(rtp_in) >= PACKETS, (len(rtp_out), len(rtp_in))


async def test_chromium_calls_the_cli_phone_answering_with_ice_lite(edge: None) -> None:
    """The same browser call, answered by ``callward phone answer --srtp dtls --ice-lite``."""
    async_api = _preconditions()
    cmd = [
        *CALLWARD_CLI,
        "phone",
        "answer",
        "--listen",
        "127.0.0.1:25143",
        "--transport",
        "tcp",
        "--user",
        "bob",
        "--register",
        "--proxy",
        f"127.0.0.1:{EDGE_PORT + 2}",
        "--domain",
        REALM,
        "--srtp",
        "dtls",
        "--ice-lite",
        "--calls",
        "1",
        "--timeout",
        "60",
        "--json",
    ]
    env = {**os.environ, "CALLWARD_PHONE_PASSWORD": "pw-bob"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        line = b""
        while b"answering on" not in line:  # registered, listening
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            line = await asyncio.to_thread(proc.stderr.readline)
        seen = await _browser_calls_bob(async_api)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        stop(proc)
    _assert_browser_audio(seen)
    result = json.loads(out)
    (answered,) = result["answered"]
    assert answered["media_security"] == "dtls-srtp" and answered["end_reason"] == "bye", result
    assert result["rtp_packets_received"] >= PACKETS, result
