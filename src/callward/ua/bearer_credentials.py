"""RFC 8898 Bearer credentials for the phone's SIP requests, from a
:class:`~callward.ua.tokens.TokenSource`.

It is a :class:`~callward.ua.credentials.CredentialSource` for the (sans-IO) registration
manager, plus one asynchronous step the adapter runs just before a request leaves,
:meth:`BearerCredentials.finalize`: it waits for an access token that is alive *now* and
writes it into the request. While a refresh is pending (IdP slow or unreachable), the request
waits; it never leaves with an expired token. The manager's synchronous hooks only mark where
the header goes:

* ``preemptive``: every REGISTER carries ``Authorization: Bearer`` from the start (no 401
  round trip on a metered link, RFC 8898 §3.2 allows a UA with a token to send it at once);
* ``answer`` to a 401/407: only when the challenge offers Bearer; the token just sent was
  refused (expired or revoked key), so the source refreshes before the retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callward.sip.message import Request, Response

if TYPE_CHECKING:  # the phone imports this module; httpx loads only with a token source
    from callward.ua.tokens import TokenSource

__all__ = ["BearerCredentials", "bearer_slot"]

Header = tuple[str, str]
_PLACEHOLDER = "Bearer pending"


def bearer_slot(request: Request, header: str = "Proxy-Authorization") -> Request:
    """``request`` with a Bearer slot in ``header`` that :meth:`BearerCredentials.finalize`
    fills (a call's INVITE: RFC 8898 toward a proxy uses Proxy-Authorization)."""
    headers = request.headers.remove(header).append(header, _PLACEHOLDER)
    return request.replace(headers=headers)


def _offers_bearer(response: Response, header: str) -> bool:
    return any(v.lstrip()[:6].lower() == "bearer" for v in response.headers.get_lines(header))


class BearerCredentials:
    def __init__(self, tokens: TokenSource, *, timeout: float = 60.0) -> None:
        self.tokens = tokens
        self.timeout = timeout
        self.finalized = 0

    def preemptive(self, request: Request) -> list[Header]:
        return [("Authorization", _PLACEHOLDER)]

    def answer(self, request: Request, response: Response) -> list[Header] | None:
        proxy = response.status == 407
        if not _offers_bearer(response, "Proxy-Authenticate" if proxy else "WWW-Authenticate"):
            return None
        self.tokens.token_refused()
        return [("Proxy-Authorization" if proxy else "Authorization", _PLACEHOLDER)]

    async def finalize(self, request: Request) -> Request:
        """``request`` with its Bearer placeholder replaced by a token alive now (waits for a
        pending refresh or a second-factor login; AuthError/TimeoutError when none comes)."""
        value = await self.tokens.authorization(request.method, timeout=self.timeout)
        headers = request.headers
        for name in ("Authorization", "Proxy-Authorization"):
            lines = headers.get_lines(name)
            if _PLACEHOLDER in lines:
                kept = [v for v in lines if v != _PLACEHOLDER]
                headers = headers.remove(name)
                for v in [*kept, value]:
                    headers = headers.append(name, v)
        self.finalized += 1
        return request.replace(headers=headers)
