"""Session timers (RFC 4028), sans-IO: who refreshes a call and when.

A UA that keeps a call alive across NAT rebinding and crashed peers agrees on an interval in
the INVITE/2xx (``Session-Expires: N;refresher=uac|uas``); the refresher sends a session refresh
(UPDATE when the peer allows it, else re-INVITE, §9) at half the interval, and the other side
sends BYE when no refresh came by ``N - min(32, N/3)`` seconds (§10).
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.sip.message import Message

__all__ = ["MIN_SE", "SessionTimer", "parse_session_expires", "request_headers", "response_timer"]

MIN_SE = 90  # RFC 4028 §4: the smallest interval a UA may ask for


@dataclass(frozen=True, slots=True)
class SessionTimer:
    interval: int  # seconds
    refresher: str  # "uac" | "uas"

    def we_refresh(self, *, we_are_uac: bool) -> bool:
        return (self.refresher == "uac") == we_are_uac

    @property
    def refresh_after(self) -> float:
        """§10: the refresher refreshes at half the interval."""
        return self.interval / 2

    @property
    def expire_after(self) -> float:
        """§10: without a refresh, the other side gives up (BYE) at N - min(32, N/3)."""
        return self.interval - min(32.0, self.interval / 3)


def parse_session_expires(msg: Message) -> SessionTimer | None:
    """``Session-Expires: delta;refresher=x`` (compact ``x``); None if absent or malformed."""
    value = msg.headers.get("Session-Expires") or msg.headers.get("x")
    if value is None:
        return None
    head, *params = [p.strip() for p in value.split(";")]
    if not head.isdigit() or len(head) > 9:
        return None
    refresher = ""
    for p in params:
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher":
            refresher = v.strip().lower()
    if refresher not in ("", "uac", "uas"):
        return None
    if int(head) <= 0:
        return None
    return SessionTimer(int(head), refresher or "uac")


def request_headers(interval: int) -> list[tuple[str, str]]:
    """Headers for an INVITE offering a session timer; we (the UAC) offer to refresh."""
    return [("Supported", "timer"), ("Session-Expires", f"{interval};refresher=uac")]


def response_timer(
    request: Message, local_interval: int | None, *, min_se: int = MIN_SE
) -> SessionTimer | None:
    """The timer a UAS puts in its 2xx (§9): the request's interval (raised to ``min_se``),
    its refresher or, when it left the choice to us, ``uac`` if it supports timers."""
    asked = parse_session_expires(request)
    if asked is None:
        if local_interval is None:
            return None
        supports = "timer" in (request.headers.get("Supported") or "").lower()
        # §9: without Session-Expires in the request we may still use one, as refresher.
        return SessionTimer(max(local_interval, min_se), "uac" if supports else "uas")
    return SessionTimer(max(asked.interval, min_se), asked.refresher)
