"""Our phone against baresip (a real softphone): we call it, it calls us, media flows both ways
and either side can hang up. baresip's own log and its recorded WAV are the judges. With
baresip's dtls_srtp module: DTLS-SRTP (RFC 5763/5764) both ways, keyed from the handshake."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from callward.media.g711 import ulaw_encode
from callward.sdp import SecurityMode
from callward.ua.call import CallState
from callward.ua.media import RtpEndpoint
from callward.ua.media_security import secure_media
from callward.ua.phone import Phone
from peers import baresip_config, free_port, tshark_capture

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

BARESIP = shutil.which("baresip")
SOX = shutil.which("sox")
TSHARK = shutil.which("tshark")
MODULES = Path("/usr/lib/baresip/modules")
SINE = ("synth", "3", "sine", "440")


def _baresip(tmp_path: Path, extra_module: str = "", mediaenc: str = "") -> tuple[Path, int]:
    """A baresip config directory (auto-answering bob, aufile in/out, sndfile dumps) and the
    SIP port it will listen on; skips when baresip, the module or sox is missing."""
    module = extra_module or "g711.so"
    if BARESIP is None or SOX is None or not (MODULES / module).exists():
        pytest.skip(f"why: baresip (baresip-core) with {module}, or sox, not installed")
    port = free_port()
    subprocess.run(
        [SOX, "-n", "-r", "8000", "-c", "1", "-b", "16", str(tmp_path / "in.wav"), *SINE],
        check=True,
        capture_output=True,
    )
    baresip_config(
        tmp_path,
        sip_port=port,
        modules=["g711.so", "aufile.so", "sndfile.so", *([extra_module] if extra_module else [])],
        account="<sip:bob@127.0.0.1>;regint=0;answermode=auto"
        + (f";mediaenc={mediaenc}" if mediaenc else ""),
        settings=[
            f"snd_path {tmp_path}",
            f"audio_player aufile,{tmp_path / 'out.wav'}",
            f"audio_source aufile,{tmp_path / 'in.wav'}",
            f"audio_alert aufile,{tmp_path / 'alert.wav'}",
        ],
    )
    return tmp_path, port


@pytest.fixture
def baresip_dir(tmp_path: Path) -> tuple[Path, int]:
    return _baresip(tmp_path)


async def start_baresip(cfg: Path, *extra: str) -> asyncio.subprocess.Process:
    assert BARESIP is not None
    proc = await asyncio.create_subprocess_exec(
        BARESIP,
        "-f",
        str(cfg),
        *extra,
        stdout=(cfg / "log.txt").open("wb"),
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    for _ in range(50):  # wait for "baresip is ready"
        await asyncio.sleep(0.1)
        if b"is ready" in (cfg / "log.txt").read_bytes():
            break
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM first so baresip flushes its log and WAV, then SIGKILL (our child, by PID)."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_we_call_baresip_and_hang_up(baresip_dir: tuple[Path, int]) -> None:
    cfg, port = baresip_dir
    proc = await start_baresip(cfg)
    alice = await Phone.start("alice")
    rtp = await RtpEndpoint.open()
    alice.media_port = rtp.local_addr[1]
    try:
        call = await alice.call(f"sip:bob@127.0.0.1:{port}")
        assert call.status == 200 and call.state is CallState.CONFIRMED
        # 1 kHz at 8 kHz sampling repeats every 8 samples, so one 160-sample frame loops cleanly.
        tone = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype(np.int16)
        await rtp.send_audio(_rtp_dest(call.leg.remote_sdp), 50, 0, ulaw_encode(tone))
        assert rtp.counters.packets_received > 10  # baresip's PCMU from in.wav reached us
        assert await call.hangup() == 200
    finally:
        await alice.close()
        rtp.close()
        await asyncio.sleep(0.3)
        await stop(proc)
    log = (cfg / "log.txt").read_text(errors="replace")
    assert "Call established" in log and "session closed" in log  # closed by our BYE
    assert "PCMU" in log
    # baresip's sndfile module dumps what it decoded from our RTP (and what it encoded).
    (dec,) = cfg.glob("dump-*-dec.wav")
    with wave.open(str(dec)) as w:
        assert w.getframerate() == 8000 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    # baresip's own μ-law decoder must hear our 1 kHz tone: take 0.5 s from where it starts and
    # check the level (8000/√2 ≈ 5657 RMS) and the spectral peak.
    assert np.count_nonzero(np.abs(pcm) > 1000) >= 160 * 20
    window = pcm[int(np.argmax(np.abs(pcm) > 1000)) :][:4000]
    spectrum = np.abs(np.fft.rfft(window))
    peak_hz = (int(np.argmax(spectrum[1:])) + 1) * 8000 / len(window)
    assert abs(peak_hz - 1000) < 20
    assert 4500 < np.sqrt(np.mean(window**2)) < 6500


def _rtp_dest(sdp: bytes) -> tuple[str, int]:
    from callward.ua.sdp_offer import audio_endpoint

    ep = audio_endpoint(sdp)
    assert ep is not None
    return ep.host, ep.port


async def test_baresip_calls_us_and_we_hang_up(baresip_dir: tuple[Path, int]) -> None:
    cfg, _ = baresip_dir
    bob = await Phone.start("service", auto_answer=True)
    wire: list[str] = []
    bob.transport.add_tap(lambda e: wire.append(f"{e.direction} {e.data[:60]!r}"))
    proc = await start_baresip(cfg, "-e", f"/dial sip:service@127.0.0.1:{bob.local_addr[1]}")
    try:
        try:
            incoming = await asyncio.wait_for(_first_call(bob), 10)
        except TimeoutError:
            log = (cfg / "log.txt").read_text(errors="replace")[-600:]
            pytest.fail(f"no call from baresip; wire={wire} stats={bob.transport.stats} {log}")
        await incoming.wait_confirmed(10)
        assert incoming.leg.remote_sdp.startswith(b"v=0")
        assert await incoming.hangup() == 200  # a BYE from the UAS side, answered by baresip
    finally:
        await bob.close()
        await asyncio.sleep(0.3)
        await stop(proc)
    log = (cfg / "log.txt").read_text(errors="replace")
    assert "Call established" in log and "session closed" in log


async def _first_call(phone: Phone) -> object:
    while not phone.calls:
        await asyncio.sleep(0.05)
    return next(iter(phone.calls.values()))


# ---------------------------------------------------------------- DTLS-SRTP


@pytest.fixture
def baresip_dtls(tmp_path: Path) -> tuple[Path, int]:
    return _baresip(tmp_path, "dtls_srtp.so", "dtls_srtp")


def _tshark_sees_dtls_and_srtp(cap: Path, port: int) -> None:
    """tshark decodes our media port as DTLS: the handshake (ClientHello 1, ServerHello 2,
    Certificate 11) is there, and the RTP-framed packets both ways carry no plain G.711."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(cap), "-d", f"udp.port=={port},dtls", "-Y",
         "dtls.handshake.type", "-T", "fields", "-e", "dtls.handshake.type"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    types = {int(t) for line in out for t in line.split(",") if t.isdigit()}
    assert {1, 2, 11}.issubset(types), types
    rows = subprocess.run(
        ["tshark", "-n", "-r", str(cap), "-T", "fields", "-e", "udp.srcport", "-e",
         "udp.payload"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    srtp = {"in": 0, "out": 0}
    for row in rows:
        sport, _, hexdata = row.partition("\t")
        data = bytes.fromhex(hexdata) if hexdata else b""
        if len(data) == 12 + 160 + 10 and data[0] >> 6 == 2:  # RTP framing + 80-bit tag
            assert b"\xff" * 32 not in data and b"\xd5" * 32 not in data
            srtp["out" if sport == str(port) else "in"] += 1
    assert srtp["out"] >= 45 and srtp["in"] >= 10, srtp


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``cond`` (a loaded machine delays baresip's first SRTP after its handshake)."""
    for _ in range(int(timeout / 0.1)):
        if cond():
            return
        await asyncio.sleep(0.1)


def _tone() -> bytes:
    tone = (8000 * np.sin(2 * np.pi * 1000 * np.arange(160) / 8000)).astype(np.int16)
    return ulaw_encode(tone)


async def test_we_call_baresip_with_dtls_srtp(baresip_dtls: tuple[Path, int]) -> None:
    cfg, port = baresip_dtls
    proc = await start_baresip(cfg)
    alice = await Phone.start("alice")
    alice.media_security = "dtls"
    rtp = await RtpEndpoint.open()
    alice.media_port = rtp.local_addr[1]
    dtls = None
    cap = cfg / "dtls.pcap"
    capture = tshark_capture(cap, [rtp.local_addr[1]]) if TSHARK else contextlib.nullcontext()
    try:
        capture.__enter__()
        call = await alice.call(f"sip:bob@127.0.0.1:{port}")
        assert call.status == 200, (cfg / "log.txt").read_text(errors="replace")[-800:]
        stream = call.negotiated()
        assert stream is not None and stream.security is SecurityMode.DTLS_SRTP
        dtls = await secure_media(rtp, stream, alice.dtls_certificate, allow_plain=False)
        assert dtls is not None
        await rtp.send_audio((stream.remote_address, stream.remote_port), 50, 0, _tone())
        await _until(lambda: rtp.counters.packets_received > 10)
        assert rtp.counters.packets_received > 10, "baresip's SRTP authenticated with our keys"
        assert await call.hangup() == 200
    finally:
        capture.__exit__(None, None, None)
        if dtls is not None:
            dtls.close()
        await alice.close()
        rtp.close()
        await asyncio.sleep(0.3)
        await stop(proc)
    log = (cfg / "log.txt").read_text(errors="replace")
    assert "Call established" in log
    if TSHARK:
        _tshark_sees_dtls_and_srtp(cap, alice.media_port)
    (dec,) = cfg.glob("dump-*-dec.wav")
    with wave.open(str(dec)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    # baresip decrypted our SRTP and decoded our 1 kHz tone.
    assert np.count_nonzero(np.abs(pcm) > 1000) >= 160 * 20, log[-800:]


async def test_baresip_calls_us_with_dtls_srtp(baresip_dtls: tuple[Path, int]) -> None:
    cfg, _ = baresip_dtls
    bob = await Phone.start("service")
    bob.media_security = "dtls"
    rtp = await RtpEndpoint.open()
    bob.media_port = rtp.local_addr[1]
    proc = await start_baresip(cfg, "-e", f"/dial sip:service@127.0.0.1:{bob.local_addr[1]}")
    dtls = None
    try:
        incoming = await bob.next_call(10)
        await incoming.answer()
        stream = incoming.negotiated()
        assert stream is not None and stream.security is SecurityMode.DTLS_SRTP
        dtls = await secure_media(rtp, stream, bob.dtls_certificate, allow_plain=False)
        assert dtls is not None
        await rtp.send_audio((stream.remote_address, stream.remote_port), 50, 0, _tone())
        await _until(lambda: rtp.counters.packets_received > 10)
        assert rtp.counters.packets_received > 10
        assert await incoming.hangup() == 200
    finally:
        if dtls is not None:
            dtls.close()
        await bob.close()
        rtp.close()
        await asyncio.sleep(0.3)
        await stop(proc)
    log = (cfg / "log.txt").read_text(errors="replace")
    assert "Call established" in log
