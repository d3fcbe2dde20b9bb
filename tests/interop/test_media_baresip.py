"""baresip (a real softphone with its own libsrtp keying) calls into the relay with SDES-SRTP
(mediaenc=srtp-mand): its audio is authenticated, decrypted and relayed to a trusted plain-RTP
leg where the 440 Hz tone it plays is found again; our SRTP toward baresip is accepted by it
and lands in its recorded output file.

SIP here is a deliberately tiny UAS written in the test (one INVITE, 200 OK with SDP, ACK):
it exists only to hand baresip the relay's address and key, so that the media is what's tested.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from callward.media.g711 import ulaw_decode, ulaw_encode
from callward.relay.leg import LegConfig, LegCounters
from callward.relay.session import MediaRelay
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpKeying
from peers import baresip_config, free_port, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]


def free_sip_port() -> int:
    """baresip listens on UDP and TCP at the port and TLS at port + 1: find all three free."""
    for _ in range(50):
        p = free_port()
        socks = []
        try:
            for port, kind in ((p, socket.SOCK_DGRAM), (p, socket.SOCK_STREAM),
                               (p + 1, socket.SOCK_STREAM)):  # fmt: skip
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port triple")


def header(msg: str, name: str) -> str:
    m = re.search(rf"^{name}:\s*(.*?)\r?$", msg, re.M | re.I)
    assert m, f"{name} missing"
    return m.group(1)


def dominant_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


async def run_call(tmp: Path) -> tuple[np.ndarray, LegCounters]:
    sip_port, bs_port = free_port(), free_sip_port()
    rtp_base = free_port() // 2 * 2
    subprocess.run(["sox", "-n", "-r", "8000", "-b", "16", "-c", "1", str(tmp / "in.wav"),
                    "synth", "20", "sine", "440", "vol", "0.5"], check=True, timeout=30)  # fmt: skip
    baresip_config(
        tmp,
        sip_port=bs_port,
        modules=["g711.so", "aufile.so", "srtp.so", "sndfile.so"],
        account="<sip:alice@127.0.0.1>;regint=0;mediaenc=srtp-mand;audio_codecs=PCMU",
        settings=[
            f"snd_path {tmp}",
            f"audio_source aufile,{tmp / 'in.wav'}",
            f"rtp_ports {rtp_base}-{rtp_base + 20}",
        ],
    )

    loop = asyncio.get_running_loop()
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind(("127.0.0.1", sip_port))
    uas.setblocking(False)
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the trusted legacy leg
    pbx.bind(("127.0.0.1", 0))
    pbx.setblocking(False)
    relay = MediaRelay(rtp_timeout_s=30)
    proc = subprocess.Popen(
        ["baresip", "-f", str(tmp), "-e", f"/dial sip:relay@127.0.0.1:{sip_port}"],
        stdin=subprocess.DEVNULL, stdout=(tmp / "baresip.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(uas, 65535), 20)
        invite = data.decode()
        assert invite.startswith("INVITE ")
        crypto = re.search(r"a=crypto:(\d+) (\S+) (inline:\S+)", invite)
        assert crypto, "baresip offered no SDES crypto"
        their_key = SrtpKeying.from_sdes(crypto.group(2), crypto.group(3))
        our_key = SrtpKeying.generate(their_key.profile)
        # leg a: baresip; no remote: its SDP names a non-loopback address, the relay latches
        session = await relay.create_session(
            header(invite, "Call-ID"),
            LegConfig("a", srtp_rx=their_key, srtp_tx=our_key, rtcp_mux=False),
            LegConfig("b", remote=pbx.getsockname(), trusted=True),
        )
        a_port = session.local_address("a")[1]
        sdp = (
            "v=0\r\no=callward 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {a_port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=crypto:{crypto.group(1)} {our_key.profile.value} {our_key.inline}\r\n"
            "a=sendrecv\r\na=ptime:20\r\n"
        )
        ok = (
            "SIP/2.0 200 OK\r\n"
            f"Via: {header(invite, 'Via')}\r\nFrom: {header(invite, 'From')}\r\n"
            f"To: {header(invite, 'To')};tag=cw1\r\nCall-ID: {header(invite, 'Call-ID')}\r\n"
            f"CSeq: {header(invite, 'CSeq')}\r\nContact: <sip:relay@127.0.0.1:{sip_port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        )
        await loop.sock_sendto(uas, ok.encode(), addr)
        # collect baresip's tone on the plain leg, and play our own tone toward baresip
        got: list[bytes] = []
        tone = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160 * 250) / 8000)).astype(np.int16)
        b_addr = session.local_address("b")
        for i in range(250):  # 5 s of 20 ms frames
            pkt = RtpPacket(0, i, i * 160, 0xC0FFEE, ulaw_encode(tone[i * 160 : (i + 1) * 160]))
            pbx.sendto(bytes(pkt), b_addr)
            await asyncio.sleep(0.02)
            while True:
                try:
                    got.append(pbx.recv(2048))
                except BlockingIOError:
                    break
        counters = session.counters[0]
        pcm = np.concatenate([ulaw_decode(parse_rtp(p).payload) for p in got if p[1] & 0x7F == 0])
        return pcm, counters
    finally:
        stop(proc, grace=10)
        await relay.close_all()
        uas.close()
        pbx.close()


def test_baresip_srtp_call_through_relay(tmp_path: Path) -> None:
    if shutil.which("baresip") is None or shutil.which("sox") is None:
        pytest.skip("why: baresip or sox not installed")
    pcm, counters = asyncio.run(run_call(tmp_path))
    # baresip -> relay: authenticated SRTP, relayed in the clear to the trusted leg
    assert counters.auth_failures == 0 and counters.packets_in >= 50
    # baresip (no rtcp-mux) sends SRTCP to port + 1: authenticated and accepted there too
    assert counters.rtcp_in >= 1
    assert len(pcm) >= 8000
    assert abs(dominant_hz(pcm[-8000:]) - 440) < 10
    assert np.sqrt(np.mean(pcm.astype(float) ** 2)) > 1000
    # relay -> baresip: our SRTP, decrypted by baresip's libsrtp and decoded; its sndfile
    # module dumps the decoded audio
    dumps = sorted(tmp_path.glob("dump-*-dec.wav"))
    assert dumps, "baresip decoded nothing"
    with wave.open(str(dumps[0])) as w:
        rate = w.getframerate()
        heard = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(heard) >= rate  # at least 1 s of our 5 s arrived and decrypted
    assert np.sqrt(np.mean(heard.astype(float) ** 2)) > 500
    assert abs(dominant_hz(heard[-rate:], rate) - 1000) < 20
