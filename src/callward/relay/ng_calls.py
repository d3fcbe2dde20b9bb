"""One anchored call as the ng protocol sees it: two monologues (tags), their relay ports,
the SDP rewrite of offers and answers, and the media core that relays their packets.

Legs are numbered by who offered first: leg 0 ("a") is the from-tag of the first offer,
leg 1 ("b") the other party. A later offer may come from either side (a re-INVITE from the
callee carries the callee's tag as from-tag), so every offer/answer names its offerer by tag.

SDP goes through ``callward.sdp``: :func:`~callward.sdp.anchor.anchor_offer` rewrites an
offer toward the other leg (relay address and port, the relay's own SDES keys, no trace of
the offerer's addresses or ICE candidates), :func:`~callward.sdp.anchor.anchor_answer`
rewrites the answer back. Keys: the relay terminates SRTP per leg (RFC 4568 §6.1: each
direction of each association has its own key), so RTP/AVP <-> RTP/SAVP bridging and SRTP
re-keying on a re-offer are the same operation.

Early media (RFC 3960) is relayed from the first answer on: the edge sends the SDP of a 183
as an ng ``answer`` (so does Kamailio's module), which sets both legs up; the 200's answer
then updates them. Media before any answer is not relayed: the answerer's address and keys
are not known yet.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

from callward.errors import CallwardError, NgError
from callward.ng.protocol import NgFlags
from callward.relay.leg import LegConfig
from callward.rtp.srtp import SrtpKeying, SrtpProfile
from callward.sdp import (
    Attribute,
    CryptoAttribute,
    LocalMedia,
    MediaDescription,
    SecurityMode,
    SecurityPolicy,
    SessionDescription,
    anchor_answer,
    anchor_offer,
    choose_stream_security,
    generate_crypto,
    media_codecs,
    media_crypto,
    parse_sdp,
)
from callward.sdp.offer_answer import effective_direction

__all__ = ["LegState", "NgCall", "PendingOffer"]

Address = tuple[str, int]
#: what pylibsrtp (callward.rtp.srtp) can key, best first
RELAY_SUITES = tuple(p.value for p in SrtpProfile)


def _keying(c: CryptoAttribute) -> SrtpKeying:
    try:
        return SrtpKeying(SrtpProfile(c.suite), c.master_key, c.master_salt)
    except (ValueError, CallwardError):
        raise NgError(f"SDES suite {c.suite} cannot be relayed") from None


def _audio_index(sd: SessionDescription) -> int:
    for i, md in enumerate(sd.media):
        if not md.rejected and md.media == "audio" and md.proto.upper().startswith("RTP/"):
            return i
    raise NgError("no RTP audio stream in the SDP")


def _rtcp_remote(sd: SessionDescription, md: MediaDescription, host: str) -> Address | None:
    value = md.attribute("rtcp")  # RFC 3605: a=rtcp:<port> [IN IP4 <address>]
    if not value:
        return None
    parts = value.split()
    if not parts[0].isdigit() or not 0 < int(parts[0]) < 65536:
        raise NgError("a=rtcp has no valid port")
    return (parts[3] if len(parts) >= 4 else host), int(parts[0])


@dataclass(slots=True)
class LegState:
    """What one party negotiated: where it receives, how it keys, and the relay's port."""

    port: int
    tag: str = ""
    label: str = ""
    remote: Address | None = None
    remote_rtcp: Address | None = None
    rtcp_mux: bool = False
    proto: str = "RTP/AVP"
    rx: SrtpKeying | None = None  # the party's key (what it sends with)
    tx: SrtpKeying | None = None  # the relay's key toward the party
    on_hold: bool = False
    codecs: dict[int, str] = field(default_factory=dict)
    clock_rate: int = 8000

    def config(self, name: str, host: str) -> LegConfig:
        return LegConfig(
            name,
            bind_host=host,
            bind_port=self.port,
            remote=self.remote,
            srtp_rx=self.rx,
            srtp_tx=self.tx,
            trusted=self.rx is None,  # plain RTP was asked for by signalling on this leg
            rtcp_mux=self.rtcp_mux,
            remote_rtcp=self.remote_rtcp,
            clock_rate=self.clock_rate,
        )


@dataclass(slots=True)
class PendingOffer:
    offerer: int
    sdp: SessionDescription
    index: int  # the anchored m= line
    flags: NgFlags
    peer_rx: SrtpKeying | None  # the offerer's key
    answer_crypto: CryptoAttribute | None  # the relay's crypto line for the answer
    offered: tuple[CryptoAttribute, ...]  # the relay's crypto lines sent to the answerer
    remote: Address | None
    remote_rtcp: Address | None
    rtcp_mux: bool
    on_hold: bool


@dataclass(slots=True)
class NgCall:
    call_id: str
    address: str  # the relay's media address put into SDP
    legs: tuple[LegState, LegState]
    created: float
    last_signal: float
    via_branch: str = ""
    record_call: bool = False
    pending: PendingOffer | None = None
    answered: bool = False
    version: int = 0

    @property
    def session_id(self) -> str:
        return str(zlib.crc32(self.call_id.encode("utf-8", "surrogateescape")))

    # -- tags --------------------------------------------------------------------------------
    def leg_of(self, from_tag: str, to_tag: str = "") -> int:
        """The leg whose tag is ``from_tag``, learning the second tag on first sight."""
        a, b = self.legs
        if from_tag == a.tag:
            return 0
        if from_tag == b.tag:
            return 1
        if not b.tag and (not to_tag or to_tag == a.tag):
            b.tag = from_tag
            return 1
        raise NgError(f"tag {from_tag[:40]!r} is not a party of this call")

    def _origin_version(self) -> int:
        self.version += 1
        return self.version

    # -- offer -------------------------------------------------------------------------------
    def offer(self, sdp_text: str, from_tag: str, to_tag: str, flags: NgFlags, label: str) -> str:
        i = self.leg_of(from_tag, to_tag)
        j = 1 - i
        if to_tag and not self.legs[j].tag:
            self.legs[j].tag = to_tag
        if label:
            self.legs[i].label = label
        self.record_call = self.record_call or flags.record_call
        sd = parse_sdp(sdp_text)
        idx = _audio_index(sd)
        md = sd.media[idx]
        conn = sd.connection_for(md)
        if conn is None:
            raise NgError("offer has no c= line for its audio stream")
        hold = effective_direction(sd, md).value != "sendrecv"
        remote = None if conn.is_legacy_hold else (conn.host, md.port)
        # the offerer's keys: it offered SDES, or plain RTP
        peer_rx = None
        answer_crypto = None
        if "SAVP" in md.proto.upper():
            policy = SecurityPolicy(preference=(SecurityMode.SDES_SRTP,), sdes_suites=RELAY_SUITES)
            try:
                chosen = choose_stream_security(sd, md, policy).remote_crypto
            except CallwardError as exc:
                raise NgError(f"offer: {exc}") from None
            assert chosen is not None
            peer_rx = _keying(chosen)
            answer_crypto = generate_crypto(chosen.tag, chosen.suite)
        # toward the answerer: the transport the flags ask for, else the offerer's
        proto = flags.transport_protocol or md.proto.upper()
        if "SAVP" in proto:
            suites = tuple(s for s in RELAY_SUITES if flags.sdes_allows(s))
            if not suites:
                raise NgError(f"transport {proto} but SDES flags leave no crypto suite")
            out_policy = SecurityPolicy(preference=(SecurityMode.SDES_SRTP,), sdes_suites=suites)
        else:
            out_policy = SecurityPolicy(preference=(), allow_plain_rtp=True, trusted_leg=True)
        local = LocalMedia(self.address, (self.legs[j].port,), session_id=self.session_id)
        origin = local.origin(self._origin_version()) if flags.replace_origin else sd.origin
        try:
            out = anchor_offer(sd, local, security=out_policy, origin=origin)
        except CallwardError as exc:
            raise NgError(f"offer: {exc}") from None
        mux_in = md.has("rtcp-mux")
        mux_out = (mux_in and "demux" not in flags.rtcp_mux) or bool(
            {"offer", "require"} & flags.rtcp_mux
        )
        out = _set_mux(out, idx, mux_out, self.legs[j].port)
        self.pending = PendingOffer(
            offerer=i,
            sdp=sd,
            index=idx,
            flags=flags,
            peer_rx=peer_rx,
            answer_crypto=answer_crypto,
            offered=media_crypto(out.media[idx]),
            remote=remote,
            remote_rtcp=_rtcp_remote(sd, md, conn.host),
            rtcp_mux=mux_in,
            on_hold=hold,
        )
        return str(out)

    # -- answer ------------------------------------------------------------------------------
    def answer(self, sdp_text: str, from_tag: str, to_tag: str, flags: NgFlags) -> str:
        p = self.pending
        if p is None:
            raise NgError("answer without a pending offer")
        i = self.leg_of(from_tag, to_tag)
        if i != p.offerer:
            raise NgError("answer's from-tag is not the offerer's")
        j = 1 - i
        if to_tag and not self.legs[j].tag:
            self.legs[j].tag = to_tag
        sd = parse_sdp(sdp_text)
        if p.index >= len(sd.media) or sd.media[p.index].rejected:
            raise NgError("answer rejected the anchored audio stream")
        md = sd.media[p.index]
        conn = sd.connection_for(md)
        if conn is None:
            raise NgError("answer has no c= line for its audio stream")
        # the answerer's keys, matched to the crypto line of ours it accepted (by tag)
        rx_j = tx_j = None
        answered = media_crypto(md)
        if answered:
            ours = {c.tag: c for c in p.offered}
            mine = ours.get(answered[0].tag)
            if mine is None or mine.suite != answered[0].suite:
                raise NgError("answer's a=crypto matches no offered tag/suite (RFC 4568 §7.1.2)")
            rx_j, tx_j = _keying(answered[0]), _keying(mine)
        elif "SAVP" in md.proto.upper():
            raise NgError(f"answer uses {md.proto} without a=crypto")
        mux_j = md.has("rtcp-mux")
        # rtpengine's rtcp-mux flags: "accept" and "demux" accept the offerer's rtcp-mux
        # whatever the answerer said ("demux" removed it toward the answerer)
        mux_flags = flags.rtcp_mux | p.flags.rtcp_mux
        mux_i = p.rtcp_mux and (mux_j or bool({"accept", "demux", "offer"} & mux_flags))
        local = LocalMedia(self.address, (self.legs[i].port,), session_id=self.session_id)
        replace = flags.replace_origin or p.flags.replace_origin
        origin = local.origin(self._origin_version()) if replace else sd.origin
        try:
            out = anchor_answer(
                sd, p.sdp, local, crypto=p.answer_crypto, rtcp_mux=mux_i, origin=origin
            )
        except CallwardError as exc:
            raise NgError(f"answer: {exc}") from None
        codecs = {c.payload_type: c.name for c in media_codecs(md)}
        voice = [c for c in media_codecs(md) if not c.is_dtmf and not c.is_comfort_noise]
        rate = voice[0].clock_rate if voice else 8000
        offerer, answerer = self.legs[i], self.legs[j]
        offerer.remote, offerer.remote_rtcp = p.remote, p.remote_rtcp
        offerer.rtcp_mux, offerer.proto = mux_i, p.sdp.media[p.index].proto.upper()
        offerer.rx, offerer.tx = (
            p.peer_rx,
            (None if p.answer_crypto is None else _keying(p.answer_crypto)),
        )
        answerer.remote = None if conn.is_legacy_hold else (conn.host, md.port)
        answerer.remote_rtcp = _rtcp_remote(sd, md, conn.host)
        answerer.rtcp_mux, answerer.proto = mux_j, md.proto.upper()
        answerer.rx, answerer.tx = rx_j, tx_j
        hold = p.on_hold or effective_direction(sd, md).value != "sendrecv"
        for leg in (offerer, answerer):
            leg.on_hold = hold
            leg.codecs = codecs
            leg.clock_rate = rate
        # the offer stays pending: a 183 and then the 200 both answer it (rtpengine does the
        # same); the next offer replaces it
        self.answered = True
        return str(out)

    def leg_configs(self) -> tuple[LegConfig, LegConfig]:
        return (self.legs[0].config("a", self.address), self.legs[1].config("b", self.address))

    @property
    def on_hold(self) -> bool:
        return any(leg.on_hold for leg in self.legs)


def _set_mux(sd: SessionDescription, idx: int, mux: bool, port: int) -> SessionDescription:
    md = sd.media[idx]
    attrs = tuple(a for a in md.attributes if a.name not in ("rtcp-mux", "rtcp"))
    # without rtcp-mux, RFC 3605 a=rtcp says where RTCP goes (the relay's port + 1)
    extra = Attribute("rtcp-mux") if mux else Attribute("rtcp", str(port + 1))
    attrs = (*attrs, extra)
    media = list(sd.media)
    media[idx] = dataclasses.replace(md, attributes=attrs)
    return dataclasses.replace(sd, media=tuple(media))
