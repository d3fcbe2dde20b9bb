"""Paced G.711 RTP over an ICE agent's nominated pair (RFC 8445 §12: media follows the selected
pair, through the TURN relay when that is the pair), counting what arrives. The agent may
restart ICE mid-call (a handover); sending and receiving then continue on the new pair.

:meth:`IceAudio.secure_dtls` runs the DTLS-SRTP handshake (RFC 5763/5764) over the pair
(RFC 7983: DTLS and SRTP share it) and from then on protects every packet; once asked for, no
plain RTP leaves or is accepted. The association outlives an ICE restart (RFC 8842 §5.5: the
fingerprints did not change), so a handover does not re-key."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from callward.errors import CallwardError, MediaError, TransportError
from callward.rtp.dtls_srtp import (
    DtlsCertificate,
    DtlsSrtpSession,
    HandshakeComplete,
    HandshakeFailed,
    is_dtls,
)
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext
from callward.sdp import NegotiatedStream
from callward.sdp.security import Setup
from callward.ua.ice_session import IceAgent

__all__ = ["IceAudio"]

_SILENCE = b"\xff" * 160  # 20 ms of PCMU silence


class IceAudio:
    """One audio stream over ``agent``: :meth:`send_audio` paces packets, a reader counts them."""

    def __init__(self, agent: IceAgent, payload_type: int = 0) -> None:
        self.agent = agent
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32)
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self._seq = secrets.randbelow(0x10000)
        self._reader: asyncio.Task[None] | None = None
        self.invalid = 0  # packets dropped: not SRTP when SRTP is required, or failed auth
        self._dtls: DtlsSrtpSession | None = None
        self._dtls_done: asyncio.Future[HandshakeComplete] | None = None
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._tx: SrtpContext | None = None
        self._rx: SrtpContext | None = None

    async def secure_dtls(
        self, stream: NegotiatedStream, certificate: DtlsCertificate, *, timeout: float = 10.0
    ) -> HandshakeComplete:
        """DTLS-SRTP over the pair, in the role the SDP gave us (``a=setup``)."""
        if not stream.remote_fingerprints:
            raise MediaError("the negotiated stream is not DTLS-SRTP (no a=fingerprint)")
        fingerprints = tuple(
            (f.hash_function, bytes.fromhex(f.value.replace(":", "")))
            for f in stream.remote_fingerprints
        )
        client = stream.local_setup is Setup.ACTIVE
        self._dtls = DtlsSrtpSession(certificate, client=client, remote_fingerprints=fingerprints)
        loop = asyncio.get_running_loop()
        self._dtls_done = loop.create_future()
        self.start()
        self._dtls.start(loop.time())
        await self._flush_dtls()
        try:
            return await asyncio.wait_for(asyncio.shield(self._dtls_done), timeout)
        except TimeoutError:
            raise MediaError("DTLS-SRTP handshake over ICE did not complete") from None

    async def _flush_dtls(self) -> None:
        dtls, done = self._dtls, self._dtls_done
        if dtls is None or done is None:
            return
        for data in dtls.datagrams_to_send():
            with contextlib.suppress(ConnectionError, TransportError):
                await self.agent.send(data)
        while (ev := dtls.next_event()) is not None:
            if isinstance(ev, HandshakeComplete) and not done.done():
                self._tx = SrtpContext(ev.send, inbound=False)
                self._rx = SrtpContext(ev.receive, inbound=True)
                done.set_result(ev)
            elif isinstance(ev, HandshakeFailed) and not done.done():
                done.set_exception(MediaError(ev.reason))
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        deadline = dtls.get_timer()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._dtls_timer = loop.call_at(deadline, self._dtls_tick)

    def _dtls_tick(self) -> None:
        self._dtls_timer = None
        if self._dtls is not None:
            self._dtls.handle_timer(asyncio.get_running_loop().time())
            asyncio.get_running_loop().create_task(self._flush_dtls())

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send_audio(self, count: int, ptime: float = 0.02) -> int:
        """Send ``count`` packets ``ptime`` apart; a packet the pair cannot carry (mid-restart)
        is counted as not sent. Returns how many left."""
        loop = asyncio.get_running_loop()
        due, sent = loop.time(), 0
        for i in range(count):
            pkt = RtpPacket(
                self.payload_type,
                (self._seq + self.packets_sent) & 0xFFFF,
                (self.packets_sent * 160) & 0xFFFFFFFF,
                self.ssrc,
                _SILENCE,
                marker=i == 0,
            )
            data = bytes(pkt)
            if self._tx is not None:
                data = self._tx.protect(data)
            elif self._dtls is not None:
                data = b""  # keys not there yet: never plain RTP on a DTLS-SRTP call
            with contextlib.suppress(ConnectionError, TransportError):
                if data:
                    await self.agent.send(data)
                    self.packets_sent += 1
                    sent += 1
            due += ptime
            await asyncio.sleep(max(0.0, due - loop.time()))
        return sent

    async def _read(self) -> None:
        while True:
            try:
                data = await self.agent.recv()
            except (ConnectionError, TransportError):
                await asyncio.sleep(0.02)  # between an ICE restart's close and connect
                continue
            if is_dtls(data):
                if self._dtls is not None:
                    self._dtls.receive_datagram(data, asyncio.get_running_loop().time())
                    await self._flush_dtls()
                continue
            try:
                if self._rx is not None:
                    data = self._rx.unprotect(data)
                elif self._dtls is not None:
                    raise MediaError("RTP before the DTLS-SRTP keys")
                parse_rtp(data)
            except CallwardError:
                self.invalid += 1
                continue
            self.packets_received += 1
            self.bytes_received += len(data)

    async def close(self) -> None:
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
        if self._dtls is not None:
            self._dtls.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
