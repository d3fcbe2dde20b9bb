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
- ``call_failed``: the call's decisive final response was ≥ 300 (408/480/486/487/5xx/6xx).

The decisive response comes from the whole transaction history of the Call-ID (``outcome``):
a 401/407 challenge followed by an authenticated retry (RFC 3261 §22.2, a new CSeq on the same
Call-ID) and a 3xx followed by a retry to the new target (§8.1.3.4) are intermediate attempts;
with forking (§16.7) any 2xx answers the call, whichever branch sent it; a caller's CANCEL
answered 487 is ``cancelled`` (the caller hung up while it rang: no problem), and a 200 that
crossed the CANCEL is an answered call; re-INVITE/UPDATE (in-dialog, To tag set) and their 491
glare (RFC 3261 §14.1) never change the call's outcome, but their SDP adds media addresses.
Early media (18x with SDP, RFC 3960) counts as the callee's media answer until a 2xx brings one.
- ``rtp_timeout``: BYE after media had stopped for ``rtp_timeout_s`` (or a Reason saying so);
  its cause is ``handover`` when the media had just moved to a new source address;
- ``session_timer_expiry``: BYE when the RFC 4028 session interval ran out without refresh;
- ``post_dial_delay``: INVITE to first 18x/2xx longer than ``pdd_warn_s``.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from callward.errors import CallwardError
from callward.quality.analysis import StreamReport
from callward.quality.capture import Datagram

if TYPE_CHECKING:  # the SIP stack loads only when a capture holds SIP (build_calls)
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
    outcome: str = "pending"  # answered | failed | cancelled | redirected | pending
    attempts: list[tuple[int, int]] = field(default_factory=list)  # (CSeq, final) per INVITE
    challenges: int = 0  # 401/407 to initial INVITEs that were retried
    forks: int = 0  # distinct To tags seen in responses to the initial INVITE(s)
    cancel_ts: int | None = None
    reinvites: int = 0
    updates: int = 0
    glare: int = 0  # 491 Request Pending to a re-INVITE/UPDATE
    early_media: bool = False
    extra_media: list[MediaDesc] = field(default_factory=list)  # from re-INVITE/UPDATE SDP
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
            "outcome": self.outcome,
            "attempts": [{"cseq": c, "status": s} for c, s in self.attempts],
            "challenges": self.challenges,
            "forks": self.forks,
            "cancelled": self.cancel_ts is not None,
            "reinvites": self.reinvites,
            "updates": self.updates,
            "glare": self.glare,
            "early_media": self.early_media,
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


def _to_tag(msg: Request | Response) -> str:
    try:
        return msg.to.tag or ""
    except CallwardError:
        return ""


@dataclass(slots=True)
class _History:
    """Per Call-ID bookkeeping while the capture is read (not reported)."""

    initial: set[int] = field(default_factory=set)  # CSeq numbers of out-of-dialog INVITEs
    in_dialog: dict[int, tuple[str, str]] = field(default_factory=dict)  # CSeq → (method, src)
    finals: dict[int, int] = field(default_factory=dict)  # initial CSeq → its final status
    to_tags: set[str] = field(default_factory=set)
    early: dict[str, tuple[MediaDesc, str]] = field(default_factory=dict)  # To tag → SDP, src
    answer_tag: str = ""


def build_calls(sip: list[Datagram]) -> list[Call]:
    """Calls (INVITE dialogs by Call-ID) from the SIP datagrams of a capture, in order, with
    their whole transaction history folded into ``outcome``/``final_status`` (module doc)."""
    calls: dict[str, Call] = {}
    hist: dict[str, _History] = {}
    if not sip:
        return []
    from callward.sip import parse_message
    from callward.sip.message import Request, Response

    for d in sorted(sip, key=lambda x: x.ts_ns):
        try:
            msg = parse_message(d.payload, strict=False)
        except CallwardError:
            continue
        cid = msg.headers.get("Call-ID") or ""
        cseq = (msg.headers.get("CSeq") or "").split()
        method = cseq[1].upper() if len(cseq) == 2 else ""
        num = int(cseq[0]) if len(cseq) == 2 and cseq[0].isdigit() else -1
        if isinstance(msg, Request):
            _on_request(calls, hist, msg, cid, num, d)
        elif isinstance(msg, Response) and cid in calls:
            _on_response(calls[cid], hist[cid], msg, method, num, d)
    for cid, c in calls.items():
        _decide(c, hist[cid])
    return list(calls.values())


def _on_request(
    calls: dict[str, Call], hist: dict[str, _History], msg: Request, cid: str, num: int,
    d: Datagram,
) -> None:  # fmt: skip
    in_dialog = bool(_to_tag(msg))
    if msg.method == "INVITE" and not in_dialog:
        c = calls.get(cid)
        if c is None:
            c = calls[cid] = Call(cid, d.ts_ns, d.src, d.dst)
            hist[cid] = _History()
            c.session_expires_s = _session_expires(msg.headers.get("Session-Expires"))
            c.last_refresh_ts = d.ts_ns
        if c.offer is None and msg.body:
            c.offer = parse_sdp(msg.body)
        hist[cid].initial.add(num)
        return
    c = calls.get(cid)
    if c is None:
        return
    h = hist[cid]
    if msg.method in ("INVITE", "UPDATE"):
        c.last_refresh_ts = d.ts_ns
        if msg.method == "INVITE":
            c.reinvites += 1
        else:
            c.updates += 1
        h.in_dialog[num] = (msg.method, d.src)
        if msg.body and (m := parse_sdp(msg.body)) is not None:
            c.extra_media.append(m)
    elif msg.method == "CANCEL" and c.cancel_ts is None:
        c.cancel_ts = d.ts_ns
    elif msg.method == "ACK" and c.offer is None and msg.body:
        # Late offer (RFC 3261 §13.2.1): the 200 carried the offer, the ACK the caller's
        # answer; either way this is where the caller receives media.
        c.offer = parse_sdp(msg.body)
    elif msg.method == "BYE" and c.bye_ts is None:
        c.bye_ts = d.ts_ns
        c.bye_from = "caller" if d.src == c.caller_sig else "callee"
        c.bye_reason = msg.headers.get("Reason") or ""


def _on_response(c: Call, h: _History, msg: Response, method: str, num: int, d: Datagram) -> None:
    if method in ("INVITE", "UPDATE") and num in h.in_dialog:
        if msg.status == 491:
            c.glare += 1
        elif 200 <= msg.status < 300 and msg.body and (m := parse_sdp(msg.body)) is not None:
            c.extra_media.append(m)
        return
    if method != "INVITE" or num not in h.initial:
        return
    tag = _to_tag(msg)
    if tag and msg.status > 100:
        h.to_tags.add(tag)
    if 100 < msg.status < 200:
        if c.first_provisional_ts is None:
            c.first_provisional_ts = d.ts_ns
        if msg.body and (m := parse_sdp(msg.body)) is not None:
            c.early_media = True
            h.early.setdefault(tag, (m, d.src))
        return
    if msg.status < 200:
        return
    h.finals.setdefault(num, msg.status)
    if msg.status < 300 and c.answered_ts is None:
        c.answered_ts = d.ts_ns
        c.last_refresh_ts = d.ts_ns
        h.answer_tag = tag
        se = _session_expires(msg.headers.get("Session-Expires"))
        if se is not None:
            c.session_expires_s = se
        if msg.body and (m := parse_sdp(msg.body)) is not None:
            c.answer, c.answer_sig = m, d.src
        elif tag in h.early:  # the 2xx repeats nothing: the early answer stands (RFC 3261 §13.2.1)
            c.answer, c.answer_sig = h.early[tag]


def _decide(c: Call, h: _History) -> None:
    """Fold the attempts into one outcome and the decisive final status."""
    c.attempts = sorted(h.finals.items())
    c.forks = len(h.to_tags)
    if c.answered_ts is not None:
        c.outcome = "answered"
        c.final_status = next(s for _, s in c.attempts if s < 300)
    elif c.attempts:
        last_cseq, last = c.attempts[-1]
        c.final_status = last
        # A challenge or redirect answered by a later INVITE was an intermediate step.
        c.challenges = sum(1 for n, s in c.attempts if s in (401, 407) and n < max(h.initial))
        if last == 487 and c.cancel_ts is not None:
            c.outcome = "cancelled"
        elif 300 <= last < 400:
            c.outcome = "redirected"
        else:
            c.outcome = "failed"
        if last_cseq < max(h.initial):  # a retry was sent but never answered in the capture
            c.outcome, c.final_status = "pending", None
    if c.answer is None and h.early:
        # Early media only (a failed or still ringing call): the callee side's media address.
        c.answer, c.answer_sig = next(iter(h.early.values()))
    if c.answered_ts is not None:
        c.challenges = sum(1 for _, s in c.attempts if s in (401, 407))


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
    for d in (call.offer, call.answer, *call.extra_media):
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
    if call.outcome == "failed" and call.final_status is not None:
        causes = {401: "auth_failed", 407: "auth_failed", 408: "request_timeout",
                  480: "temporarily_unavailable", 486: "busy", 487: "request_terminated",
                  491: "glare"}  # fmt: skip
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
