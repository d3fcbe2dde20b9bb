"""Signalling ↔ media correlation and root-cause classification.

SIP dialogs found in the capture are joined with RTP streams through the SDP offer/answer
addresses (RFC 3264 §5/§6: each side receives on its own c=/m= address). NAT and latching
(RFC 4961 symmetric RTP; an SBC "latches" onto the source a peer actually sends from) are
recognised by comparing where a side's media really comes from with what its SDP says.

Classifications (``Problem.kind``):
- ``no_audio``: an answered call with no RTP in either direction;
- ``one_way_audio``: one direction missing; ``cause`` is ``no_packets`` (the sender never sent),
  ``srtp_key_mismatch`` (SDES a=crypto answer not among the offered tag/suites, or SAVP/AVP),
  ``wrong_address`` (it sent somewhere other than the peer's SDP), ``nat`` (the peer's SDP
  names a private address its media does not come from and nobody latched) or
  ``wrong_sdp_address`` (same with a public address);
- ``call_failed``: the INVITE's final response was ≥ 300 (408/480/486/487/5xx/6xx);
- ``rtp_timeout``: BYE after media had stopped for ``rtp_timeout_s`` (or a Reason saying so);
  its cause is ``handover`` when the media had just moved to a new source address;
- ``session_timer_expiry``: BYE when the RFC 4028 session interval ran out without refresh;
- ``post_dial_delay``: INVITE to first 18x/2xx longer than ``pdd_warn_s``.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import Any

from callward.errors import CallwardError
from callward.quality.analysis import StreamReport
from callward.quality.capture import Datagram
from callward.sip import parse_message
from callward.sip.message import Request, Response

__all__ = ["Call", "MediaDesc", "Problem", "build_calls", "classify", "parse_sdp"]


@dataclass(frozen=True, slots=True)
class MediaDesc:
    """The audio part of one SDP body: where that side wants to receive RTP."""

    ip: str
    port: int
    rtpmap: dict[int, tuple[str, int]]
    payload_types: tuple[int, ...]
    proto: str = "RTP/AVP"
    crypto: tuple[tuple[int, str], ...] = ()  # RFC 4568 a=crypto (tag, suite)

    @property
    def secure(self) -> bool:
        return "SAVP" in self.proto


def parse_sdp(body: bytes) -> MediaDesc | None:
    """First audio m= line with its c= (media- or session-level) and rtpmaps (RFC 8866 §5)."""
    try:
        text = body.decode("utf-8", "replace")
    except Exception:  # pragma: no cover - decode with replace does not raise
        return None
    sess_ip: str | None = None
    media_ip: str | None = None
    port: int | None = None
    pts: tuple[int, ...] = ()
    proto = "RTP/AVP"
    crypto: list[tuple[int, str]] = []
    rtpmap: dict[int, tuple[str, int]] = {}
    in_audio = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if port is not None:
                break  # only the first audio section
            parts = line[2:].split()
            in_audio = len(parts) >= 3 and parts[0] == "audio"
            if in_audio:
                try:
                    port = int(parts[1].split("/")[0])
                    proto = parts[2]
                    pts = tuple(int(p) for p in parts[3:] if p.isdigit())
                except ValueError:
                    return None
        elif line.startswith("c="):
            parts = line[2:].split()
            if len(parts) >= 3:
                addr = parts[2].split("/")[0]
                if in_audio:
                    media_ip = addr
                elif port is None:
                    sess_ip = addr
        elif in_audio and line.startswith("a=rtpmap:"):
            head, _, enc = line[9:].partition(" ")
            name, _, rest = enc.partition("/")
            rate = rest.split("/")[0]
            if head.isdigit():
                rtpmap[int(head)] = (name, int(rate) if rate.isdigit() else 0)
        elif in_audio and line.startswith("a=crypto:"):
            f = line[9:].split()
            if len(f) >= 2 and f[0].isdigit():
                crypto.append((int(f[0]), f[1]))
    ip = media_ip or sess_ip
    if port is None or ip is None:
        return None
    try:  # the same spelling as capture addresses (IPv6 compressed, RFC 5952)
        ip = str(ipaddress.ip_address(ip))
    except ValueError:
        pass  # an FQDN stays as written
    return MediaDesc(ip, port, rtpmap, pts, proto, tuple(crypto))


def srtp_mismatch(offer: MediaDesc, answer: MediaDesc) -> str:
    """Why SDES-SRTP keying cannot work between this offer and answer ('' if it can).

    RFC 4568 §5.1.2: the answer accepts one offered a=crypto by tag *and* suite; a profile
    mismatch (SAVP vs AVP) means one side encrypts what the other plays as plain RTP.
    """
    if offer.secure != answer.secure:
        return "one side uses RTP/SAVP, the other RTP/AVP"
    if not answer.secure:
        return ""
    if not answer.crypto:
        return "answer has no a=crypto"
    offered = set(offer.crypto)
    if not any(c in offered for c in answer.crypto):
        return "answer's a=crypto tag/suite was not offered"
    return ""


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    detail: str
    cause: str = ""
    direction: str = ""

    def as_dict(self) -> dict[str, str]:
        d = {"kind": self.kind, "detail": self.detail}
        if self.cause:
            d["cause"] = self.cause
        if self.direction:
            d["direction"] = self.direction
        return d


@dataclass(slots=True)
class Call:
    """One INVITE dialog as seen in the capture."""

    call_id: str
    invite_ts: int
    caller_sig: str
    callee_sig: str
    offer: MediaDesc | None = None
    answer: MediaDesc | None = None
    answer_sig: str = ""
    first_provisional_ts: int | None = None
    answered_ts: int | None = None
    final_status: int | None = None
    bye_ts: int | None = None
    bye_from: str = ""
    bye_reason: str = ""
    session_expires_s: float | None = None
    last_refresh_ts: int | None = None
    streams: list[StreamReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    handovers: list[int] = field(default_factory=list)  # capture ns when media changed source

    @property
    def pdd_s(self) -> float | None:
        t = self.first_provisional_ts or self.answered_ts
        return None if t is None else (t - self.invite_ts) / 1e9

    def rtpmap(self) -> dict[int, tuple[str, int]]:
        m: dict[int, tuple[str, int]] = {}
        for d in (self.offer, self.answer):
            if d:
                m.update(d.rtpmap)
        return m

    def _leg(self, s: StreamReport) -> dict[str, Any]:
        """Direction and MOS of one of the call's streams (what each party hears)."""
        to = (s.dst, s.dport)
        if self.answer and to == (self.answer.ip, self.answer.port):
            direction = "caller->callee"
        elif self.offer and to == (self.offer.ip, self.offer.port):
            direction = "callee->caller"
        else:
            direction = "latched"
        return {
            "ssrc": f"{s.ssrc:#010x}",
            "direction": direction,
            "mos_network": _mos_of(s, "network"),
            "mos_adaptive": _mos_of(s, "adaptive"),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "caller_media": f"{self.offer.ip}:{self.offer.port}" if self.offer else None,
            "callee_media": f"{self.answer.ip}:{self.answer.port}" if self.answer else None,
            "final_status": self.final_status,
            "post_dial_delay_s": None if self.pdd_s is None else round(self.pdd_s, 3),
            "answered": self.answered_ts is not None,
            "ended_by": self.bye_from or None,
            "streams": [
                f"{s.src}:{s.sport}->{s.dst}:{s.dport}/{s.ssrc:#010x}" for s in self.streams
            ],
            "legs": [self._leg(s) for s in self.streams],
            "handovers": len(self.handovers),
            "problems": [p.as_dict() for p in self.problems],
        }


def _mos_of(s: StreamReport, model: str) -> float | None:
    m = s.mos.get(model) if s.mos else None
    return None if m is None else m["mos"]


def _session_expires(v: str | None) -> float | None:
    if not v:
        return None
    head = v.split(";")[0].strip()
    return float(head) if head.isdigit() else None


def build_calls(sip: list[Datagram]) -> list[Call]:
    """Calls (INVITE dialogs by Call-ID) from the SIP datagrams of a capture, in order."""
    calls: dict[str, Call] = {}
    for d in sorted(sip, key=lambda x: x.ts_ns):
        try:
            msg = parse_message(d.payload, strict=False)
        except CallwardError:
            continue
        cid = msg.headers.get("Call-ID") or ""
        cseq = (msg.headers.get("CSeq") or "").split()
        method = cseq[1].upper() if len(cseq) == 2 else ""
        if isinstance(msg, Request):
            if msg.method == "INVITE" and cid not in calls:
                c = calls[cid] = Call(cid, d.ts_ns, d.src, d.dst)
                c.offer = parse_sdp(msg.body) if msg.body else None
                c.session_expires_s = _session_expires(msg.headers.get("Session-Expires"))
                c.last_refresh_ts = d.ts_ns
                continue
            c2 = calls.get(cid)
            if c2 is None:
                continue
            if msg.method in ("INVITE", "UPDATE"):
                c2.last_refresh_ts = d.ts_ns
            elif msg.method == "ACK" and c2.offer is None and msg.body:
                # Late offer (RFC 3261 §13.2.1): the 200 carried the offer, the ACK the
                # caller's answer; either way this is where the caller receives media.
                c2.offer = parse_sdp(msg.body)
            elif msg.method == "BYE" and c2.bye_ts is None:
                c2.bye_ts = d.ts_ns
                c2.bye_from = "caller" if d.src == c2.caller_sig else "callee"
                c2.bye_reason = msg.headers.get("Reason") or ""
        elif isinstance(msg, Response):
            c3 = calls.get(cid)
            if c3 is None or method != "INVITE":
                continue
            if 100 < msg.status < 200 and c3.first_provisional_ts is None:
                c3.first_provisional_ts = d.ts_ns
            if msg.body and c3.answer is None and msg.status < 300:
                c3.answer = parse_sdp(msg.body)
                c3.answer_sig = d.src
            if msg.status >= 200 and c3.final_status is None:
                c3.final_status = msg.status
                if msg.status < 300:
                    c3.answered_ts = d.ts_ns
                    c3.last_refresh_ts = d.ts_ns
                    se = _session_expires(msg.headers.get("Session-Expires"))
                    if se is not None:
                        c3.session_expires_s = se
    return list(calls.values())


# Addresses a NAT hides: RFC 1918, RFC 6598 shared (CGNAT), link-local, RFC 4193 ULA.
_NAT_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
              "169.254.0.0/16", "fc00::/7", "fe80::/10")
)  # fmt: skip


def _private(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a.version == n.version and a in n for n in _NAT_NETS)


def _direction(
    sender_sdp: MediaDesc, sender_sig: str, receiver_sdp: MediaDesc, streams: list[StreamReport]
) -> tuple[bool, str]:
    """Does the receiver get the sender's audio? (ok, cause when not ok)."""
    to_recv = [s for s in streams if (s.dst, s.dport) == (receiver_sdp.ip, receiver_sdp.port)]
    to_sender = [s for s in streams if (s.dst, s.dport) == (sender_sdp.ip, sender_sdp.port)]
    recv_actual = {(s.src, s.sport) for s in to_sender}  # where the receiver's media comes from
    sender_ips = {sender_sdp.ip, sender_sig}
    from_sender = [
        s for s in streams
        if ((s.src, s.sport) == (sender_sdp.ip, sender_sdp.port) or s.src in sender_ips)
        and s not in to_sender
    ]  # fmt: skip
    latched = [s for s in from_sender if (s.dst, s.dport) in recv_actual]
    if latched:
        return True, ""
    if to_recv:
        actual_ips = {ip for ip, _ in recv_actual}
        if not recv_actual or receiver_sdp.ip in actual_ips:
            return True, ""
        return False, "nat" if _private(receiver_sdp.ip) else "wrong_sdp_address"
    if from_sender:
        return False, "wrong_address"
    return False, "no_packets"


def _handovers(mine: list[StreamReport]) -> list[int]:
    """Times at which media toward one destination switched to a new source address (a phone
    moving between Wi-Fi and cellular keeps its dialog but sends from a new address)."""
    out: list[int] = []
    by_dst: dict[tuple[str, int], list[StreamReport]] = {}
    for s in mine:
        by_dst.setdefault((s.dst, s.dport), []).append(s)
    for group in by_dst.values():
        group.sort(key=lambda x: x.first_ts_ns)
        for a, b in itertools.pairwise(group):
            if a.src != b.src and b.first_ts_ns >= a.last_ts_ns - 1_000_000_000:
                out.append(b.first_ts_ns)
    return sorted(out)


def classify(
    call: Call,
    streams: list[StreamReport],
    rtp_timeout_s: float = 10.0,
    pdd_warn_s: float = 5.0,
) -> None:
    """Attach the call's streams and fill ``call.problems``."""
    mine: list[StreamReport] = []
    addrs = set()
    for d in (call.offer, call.answer):
        if d:
            addrs.add((d.ip, d.port))
    sig_ips = {call.caller_sig, call.callee_sig, call.answer_sig}
    # Ports are reused by later calls: a stream belongs to this call only while it lasts.
    end = (call.bye_ts if call.bye_ts is not None else 1 << 62) + 2_000_000_000
    during = [s for s in streams if s.first_ts_ns <= end and s.last_ts_ns >= call.invite_ts]
    for s in during:
        if (s.dst, s.dport) in addrs or (s.src, s.sport) in addrs:
            mine.append(s)
    # Streams from a side's NAT/latched address pair with the call through the other address.
    for s in during:
        if (
            s not in mine
            and s.src in sig_ips
            and any((s.dst, s.dport) == (m.src, m.sport) for m in mine)
        ):
            mine.append(s)
    call.streams = mine
    call.handovers = _handovers(mine)
    p = call.problems
    if call.pdd_s is not None and call.pdd_s > pdd_warn_s:
        p.append(Problem("post_dial_delay", f"{call.pdd_s:.1f} s from INVITE to first response"))
    if call.final_status is not None and call.final_status >= 300:
        causes = {408: "request_timeout", 480: "temporarily_unavailable", 486: "busy",
                  487: "request_terminated"}  # fmt: skip
        cause = causes.get(call.final_status, "server_error" if call.final_status < 600 and
                           call.final_status >= 500 else "rejected")  # fmt: skip
        p.append(Problem("call_failed", f"INVITE answered {call.final_status}", cause))
        return
    if call.answered_ts is None:
        return
    if call.offer and call.answer and (why := srtp_mismatch(call.offer, call.answer)):
        # Media may flow both ways in the capture; the caller cannot decrypt what the
        # callee keyed with an unoffered suite (and vice versa for a profile mismatch).
        p.append(Problem("one_way_audio", why, "srtp_key_mismatch", "callee->caller"))
    elif call.offer and call.answer:
        fwd_ok, fwd_cause = _direction(call.offer, call.caller_sig, call.answer, mine)
        rev_sig = call.answer_sig or call.callee_sig
        rev_ok, rev_cause = _direction(call.answer, rev_sig, call.offer, mine)
        if not mine:
            p.append(Problem("no_audio", "answered call without RTP in either direction"))
        elif not fwd_ok and not rev_ok:
            p.append(Problem("no_audio", "neither side receives the other's audio",
                             f"{fwd_cause}/{rev_cause}"))  # fmt: skip
        elif not fwd_ok:
            p.append(Problem("one_way_audio", "callee does not receive caller audio", fwd_cause,
                             "caller->callee"))  # fmt: skip
        elif not rev_ok:
            p.append(Problem("one_way_audio", "caller does not receive callee audio", rev_cause,
                             "callee->caller"))  # fmt: skip
    if call.bye_ts is not None:
        reason = call.bye_reason.lower()
        last_media = max((s.last_ts_ns for s in mine), default=None)
        if ("rtp" in reason and "timeout" in reason) or "media timeout" in reason:
            p.append(Problem("rtp_timeout", "BYE with an RTP timeout reason", "rtp_timeout"))
        elif last_media is not None and (call.bye_ts - last_media) / 1e9 >= rtp_timeout_s:
            gap = (call.bye_ts - last_media) / 1e9
            # Media that moved to a new address shortly before it died: the handover failed.
            cause = "handover" if call.handovers else "rtp_timeout"
            p.append(Problem("rtp_timeout", f"BYE {gap:.1f} s after the last RTP packet",
                             cause))  # fmt: skip
        elif call.session_expires_s and call.last_refresh_ts is not None:
            since = (call.bye_ts - call.last_refresh_ts) / 1e9
            # RFC 4028 §10: without a refresh the session is torn down by BYE sent
            # min(32, S/3) seconds before it expires.
            limit = call.session_expires_s - min(32.0, call.session_expires_s / 3)
            if since >= limit or "session" in reason:
                p.append(Problem("session_timer_expiry",
                                 f"BYE {since:.0f} s after the last refresh (Session-Expires "
                                 f"{call.session_expires_s:.0f} s)", "session_timer"))  # fmt: skip
