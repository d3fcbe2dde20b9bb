"""What ``callward phone call`` and ``phone answer`` share around a call: port checks, the
registration manager on one or two edges (with an idle byte budget), OAuth Bearer credentials,
the media port and its keying (SDES, or DTLS-SRTP with ICE-lite for browsers). Split from
cli/phone.py, which keeps the commands."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from callward.cli.exits import fail as _fail
from callward.cli.phone_oauth import OAuthOptions
from callward.errors import CallwardError

if TYPE_CHECKING:  # imported inside the functions (lazy CLI, cli/__init__.py)
    from callward.ua import Phone, RtpEndpoint
    from callward.ua.credentials import CredentialSource
    from callward.ua.tokens import TokenSource
    from callward.usage.budget import IdleBudget

__all__ = [
    "bearer",
    "idle_budget",
    "nonzero",
    "open_media",
    "register_phone",
    "secure_call",
    "token_report",
]


def nonzero(addr: tuple[str, int], what: str) -> tuple[str, int]:
    if addr[1] == 0:
        raise _fail(f"{what}: port must be 1..65535, got 0")
    return addr


async def register_phone(
    phone: Phone,
    edges: list[tuple[str, int]],
    domain: str | None,
    expires: int,
    timeout: float,
    credentials: CredentialSource | None = None,
    budget: IdleBudget | None = None,
) -> dict[str, Any]:
    """Start the registration manager on ``edges`` (two edges: RFC 5626 outbound with one flow
    each) and wait for the first binding. Unregistered again by ``phone.close()``. With an
    idle ``budget`` (usage/budget.py) the expiry and the keep-alive byte cap come from it."""
    from callward.ua.registration_agent import RegistrationAgent, keepalive_policy

    where = domain or f"{edges[0][0]}:{edges[0][1]}"
    instance = f"urn:uuid:{uuid.uuid4()}" if len(edges) > 1 else None
    keepalive: Any = True
    if budget is not None:
        expires = budget.register_expires
        cap = budget.keepalive_cap if budget.fits else None
        keepalive = keepalive_policy(phone.transport.name, bytes_per_hour_cap=cap)
    agent = await RegistrationAgent.start(
        phone, edges, domain=where, expires=expires, instance=instance, credentials=credentials,
        keepalive=keepalive,
    )  # fmt: skip
    try:
        await agent.wait_registered(timeout)
    except TimeoutError:
        return {"registered_flows": 0}
    return {"registered_flows": len(agent.registered())}


def idle_budget(bytes_per_hour: float | None, transport: str, register: bool) -> IdleBudget | None:
    if bytes_per_hour is None:
        return None
    if not register:
        raise CallwardError("--idle-budget needs --register (it sets refresh and keep-alives)")
    from callward.usage.budget import idle_budget

    return idle_budget(bytes_per_hour, transport)


async def bearer(
    oauth: OAuthOptions | None, timeout: float
) -> tuple[TokenSource | None, CredentialSource | None]:
    """With ``--oauth-issuer``: a token alive now (stored, refreshed or from a login with the
    second factor) before anything is sent, so a refused login ends the command at once."""
    if oauth is None:
        return None, None
    from callward.cli.phone_oauth import open_token_source
    from callward.ua.bearer_credentials import BearerCredentials

    tokens = await open_token_source(oauth)
    try:
        await tokens.access_token(timeout=timeout)
    except BaseException:
        await tokens.aclose()
        raise
    return tokens, BearerCredentials(tokens, timeout=timeout)


def token_report(tokens: TokenSource | None) -> dict[str, Any]:
    if tokens is None:
        return {}
    return {"auth": "bearer", "token_logins": tokens.logins,
            "token_refreshes": tokens.core.refreshes_started}  # fmt: skip


async def open_media(phone: Phone) -> RtpEndpoint:
    from callward.ua import RtpEndpoint

    rtp = await RtpEndpoint.open(phone.media_host)
    phone.media_port = rtp.local_addr[1]
    return rtp


async def secure_call(call: Any, rtp: RtpEndpoint, out: dict[str, Any]) -> Any:
    """Key the media port as negotiated (SDES keys, or a DTLS-SRTP handshake on it) before any
    packet leaves; plain RTP only when the phone runs with ``--srtp none``."""
    from callward.ua.media_security import secure_media

    stream = call.negotiated()
    if stream is None:
        return None
    phone = call.phone
    dtls = await secure_media(
        rtp,
        stream,
        phone.dtls_certificate,
        allow_plain=phone.media_security == "rtp",
        ice_lite=phone.ice_lite,
    )
    out["media_security"] = stream.security.value
    return dtls
