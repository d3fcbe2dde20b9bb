"""Keying a phone's media port from the negotiated stream: SDES keys straight from the two
``a=crypto`` lines, or DTLS-SRTP through :class:`DtlsMedia`, the asyncio adapter of
:class:`~callward.rtp.dtls_srtp.DtlsSrtpSession` over an :class:`~callward.ua.media.RtpEndpoint`.

After offer/answer (``a=fingerprint`` + ``a=setup``, RFC 5763 §5) the active side starts the
handshake toward the peer's media address; DTLS records on the RTP port are claimed by the
endpoint's demultiplexer (RFC 7983), and the exported keys (RFC 5764 §4.2) key the endpoint's
SRTP contexts. Until then the endpoint sends nothing: no plain RTP ever leaves a DTLS call.
"""

from __future__ import annotations

import asyncio

from callward.errors import MediaError
from callward.rtp.dtls_srtp import (
    DtlsCertificate,
    DtlsSrtpSession,
    HandshakeComplete,
    HandshakeFailed,
    is_dtls,
)
from callward.rtp.srtp import SrtpKeying, SrtpProfile
from callward.sdp import NegotiatedStream, SecurityMode
from callward.sdp.security import Setup
from callward.ua.ice_lite import IceLite
from callward.ua.media import RtpEndpoint

__all__ = ["DtlsMedia", "secure_media"]


async def secure_media(
    endpoint: RtpEndpoint,
    stream: NegotiatedStream,
    certificate: DtlsCertificate,
    *,
    allow_plain: bool,
    timeout: float = 10.0,
    ice_lite: IceLite | None = None,
) -> DtlsMedia | None:
    """Key ``endpoint`` for ``stream`` before any media flows: SDES from the crypto lines
    (RFC 4568 §6.1: our line keys what we send), DTLS-SRTP by a handshake on the media port
    (returned, to close at hang-up). Plain RTP only when ``allow_plain``; else MediaError.
    ``ice_lite`` answers the peer's ICE checks on the media port (a browser needs them before
    its DTLS handshake)."""
    mode = stream.security
    if mode is SecurityMode.SDES_SRTP:
        local, remote = stream.local_crypto, stream.remote_crypto
        if local is None or remote is None:
            raise MediaError("SDES-SRTP negotiated without both a=crypto lines")
        endpoint.secure(
            SrtpKeying(SrtpProfile(local.suite), local.master_key, local.master_salt),
            SrtpKeying(SrtpProfile(remote.suite), remote.master_key, remote.master_salt),
        )
        return None
    if mode is SecurityMode.DTLS_SRTP:
        dtls = DtlsMedia(endpoint, stream, certificate)
        if ice_lite is not None:
            ice_lite.attach(endpoint)  # STUN checks first, DTLS behind it on the same port
        dtls.start()
        try:
            await dtls.wait(timeout)
        except (TimeoutError, MediaError) as exc:
            dtls.close()
            raise MediaError(f"DTLS-SRTP handshake did not complete: {exc or 'timeout'}") from None
        return dtls
    if mode is SecurityMode.PLAIN and allow_plain:
        return None
    raise MediaError(f"media security {mode.value} is not allowed here (no plain RTP fallback)")


class DtlsMedia:
    """Runs one DTLS-SRTP handshake on ``endpoint`` for a negotiated stream."""

    def __init__(
        self,
        endpoint: RtpEndpoint,
        stream: NegotiatedStream,
        certificate: DtlsCertificate,
    ) -> None:
        if not stream.remote_fingerprints:
            raise MediaError("the negotiated stream is not DTLS-SRTP (no a=fingerprint)")
        self.endpoint = endpoint
        self.remote = (stream.remote_address, stream.remote_port)
        client = stream.local_setup is Setup.ACTIVE
        fingerprints = tuple(
            (f.hash_function, bytes.fromhex(f.value.replace(":", "")))
            for f in stream.remote_fingerprints
        )
        self.session = DtlsSrtpSession(certificate, client=client, remote_fingerprints=fingerprints)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[HandshakeComplete] = self._loop.create_future()
        self.peer: tuple[str, int] | None = None
        endpoint.demux = self._demux

    @property
    def client(self) -> bool:
        return self.session.client

    def start(self) -> None:
        self.session.start(self._loop.time())
        self._pump()

    async def wait(self, timeout: float = 10.0) -> HandshakeComplete:
        """The keys, once the handshake finished and the endpoint is secured."""
        return await asyncio.wait_for(asyncio.shield(self._done), timeout)

    def close(self) -> None:
        self.session.close()
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
        if self.endpoint.demux == self._demux:
            self.endpoint.demux = None

    def _demux(self, data: bytes, addr: tuple[str, int]) -> bool:
        if not is_dtls(data):
            return False
        self.peer = self.peer or addr
        self.session.receive_datagram(data, self._loop.time())
        self._pump()
        return True

    def _tick(self) -> None:
        self._timer = None
        self.session.handle_timer(self._loop.time())
        self._pump()

    def _pump(self) -> None:
        # Answer where the peer's DTLS came from (a NATed peer's real address), else its SDP.
        dest = self.peer or self.remote
        for data in self.session.datagrams_to_send():
            self.endpoint._sendto(data, dest)
        while (ev := self.session.next_event()) is not None:
            if self._done.done():
                continue
            if isinstance(ev, HandshakeComplete):
                self.endpoint.secure(ev.send, ev.receive)
                self._done.set_result(ev)
            elif isinstance(ev, HandshakeFailed):
                self._done.set_exception(MediaError(ev.reason))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.get_timer()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._tick)
