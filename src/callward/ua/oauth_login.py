"""How the phone finds its authorisation server and logs in through a browser: OAuth 2.0 for
native apps (RFC 8252) with the authorization-code grant and PKCE (RFC 7636).

* :func:`discover` reads the issuer's metadata (OpenID Connect Discovery 1.0 §4, or RFC 8414
  ``/.well-known/oauth-authorization-server``) and checks that it names the same issuer
  (RFC 8414 §3.3: a metadata document for another issuer is an attack, not a redirect).
* :class:`AuthCodeLogin` is a :class:`~callward.ua.tokens.Reauthenticator`: a fresh PKCE
  verifier (32 random bytes, ``S256``, RFC 7636 §4.1-4.2) and ``state`` per attempt, a one-shot
  HTTP listener on ``http://127.0.0.1:<random port>/callback`` (RFC 8252 §7.3: loopback, port
  chosen at run time), the authorization URL handed to ``show`` (print it, or open a browser),
  then the code exchanged once with the verifier. The user types the password *and* the TOTP
  code into the IdP's page; the phone never sees either, and nothing weaker is ever tried.

The ``state`` check (RFC 6749 §10.12) and PKCE together stop a code injected by another app
on the device from being exchanged by this one (RFC 8252 §8.1).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from callward.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from callward.ua.tokens import OAuthClient

__all__ = [
    "AuthCodeLogin",
    "ProviderMetadata",
    "callback_code",
    "discover",
    "pkce_pair",
    "s256_challenge",
]

MAX_METADATA_BYTES = 64 * 1024
MAX_REQUEST_HEAD = 8 * 1024  # the redirect's request line and headers
_DONE_PAGE = b"<!doctype html><title>callward</title><p>Signed in. You can close this window."


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("issuer", "token_endpoint", "authorization_endpoint"):
            value = getattr(self, name)
            if value is not None and urlsplit(value).scheme not in ("http", "https"):
                raise ConfigError(f"issuer metadata {name}: expected an http(s) URL")


def _check_issuer_url(issuer: str) -> str:
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"--oauth-issuer {issuer[:80]!r}: expected an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError("--oauth-issuer: plain http is allowed on loopback only")
    return issuer.rstrip("/")


async def discover(issuer: str, *, http: httpx.AsyncClient | None = None) -> ProviderMetadata:
    """The issuer's endpoints. ConfigError when the metadata is missing, too large, or names
    another issuer; AuthError (transient) when the issuer cannot be reached."""
    issuer = _check_issuer_url(issuer)
    own = http is None
    client = http or httpx.AsyncClient(timeout=5.0, trust_env=False)
    try:
        for well_known in ("openid-configuration", "oauth-authorization-server"):
            try:
                resp = await client.get(f"{issuer}/.well-known/{well_known}")
            except httpx.HTTPError as exc:
                raise AuthError(f"issuer unreachable: {type(exc).__name__}") from None
            if resp.status_code == 200:
                break
        else:
            raise ConfigError("issuer has no OIDC/RFC 8414 metadata document")
        if len(resp.content) > MAX_METADATA_BYTES:
            raise ConfigError("issuer metadata larger than 64 KiB")
        try:
            body = resp.json()
        except ValueError:
            raise ConfigError("issuer metadata is not JSON") from None
        if not isinstance(body, dict) or str(body.get("issuer", "")).rstrip("/") != issuer:
            raise ConfigError("issuer metadata names another issuer (RFC 8414 §3.3)")
        token = body.get("token_endpoint")
        if not isinstance(token, str):
            raise ConfigError("issuer metadata has no token_endpoint")
        authz = body.get("authorization_endpoint")
        revoke = body.get("revocation_endpoint")
        return ProviderMetadata(
            issuer, token, authz if isinstance(authz, str) else None,
            revoke if isinstance(revoke, str) else None,
        )  # fmt: skip
    finally:
        if own:
            await client.aclose()


def s256_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, code_challenge) for ``S256`` (RFC 7636 §4.1: 43 characters from 32
    random bytes, 256 bits of entropy)."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return verifier, s256_challenge(verifier)


def callback_code(target: str, state: str) -> str | None:
    """The code in a redirect's request target ``/callback?code=..&state=..``; None for a
    request that is not the callback (a favicon); AuthError for an error answer or a wrong
    ``state`` (RFC 6749 §4.1.2.1, §10.12)."""
    path, _, query = target.partition("?")
    if path != "/callback":
        return None
    params = dict(parse_qsl(query[:MAX_REQUEST_HEAD]))
    if not secrets.compare_digest(params.get("state", "").encode(), state.encode()):
        raise AuthError("authorization redirect with a wrong state (not our request)")
    if "error" in params:
        raise AuthError(f"authorization refused: {params['error'][:40]}")
    code = params.get("code", "")
    if not code or len(code) > 1024:
        raise AuthError("authorization redirect without a code")
    return code


class _Redirect:
    """The one-shot loopback listener of RFC 8252 §7.3."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1") -> str:
        self.server = await asyncio.start_server(self._serve, host, 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://{host}:{port}/callback"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, body = b"404 Not Found", b"not found"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            if len(head) > MAX_REQUEST_HEAD:
                raise ValueError
            parts = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
            if len(parts) == 3 and parts[0] == "GET":
                code = callback_code(parts[1], self.state)
                if code is not None and not self.result.done():
                    self.result.set_result(code)
                    status, body = b"200 OK", _DONE_PAGE
        except AuthError as exc:
            if not self.result.done():
                self.result.set_exception(exc)
            status, body = b"400 Bad Request", b"sign-in failed"
        except (ValueError, UnicodeDecodeError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):  # fmt: skip
            status, body = b"400 Bad Request", b"bad request"
        with contextlib.suppress(OSError):
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8\r\n"
                         b"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
            await writer.drain()
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@dataclass(frozen=True, slots=True)
class AuthCodeLogin:
    """See the module docstring. ``show`` receives the URL the user must open (the CLI prints
    it; an app opens the system browser, RFC 8252 §4.1); ``timeout`` bounds the wait."""

    authorization_endpoint: str
    show: Callable[[str], Awaitable[None] | None]
    scope: str = "sip"
    timeout: float = 300.0

    async def authenticate(self, client: OAuthClient) -> dict[str, Any]:
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        redirect = _Redirect(state)
        redirect_uri = await redirect.start()
        try:
            query = urlencode({
                "response_type": "code", "client_id": client.client_id,
                "redirect_uri": redirect_uri, "scope": self.scope, "state": state,
                "code_challenge": challenge, "code_challenge_method": "S256",
            })  # fmt: skip
            shown = self.show(f"{self.authorization_endpoint}?{query}")
            if shown is not None:
                await shown
            try:
                code = await asyncio.wait_for(asyncio.shield(redirect.result), self.timeout)
            except TimeoutError:
                raise AuthError(f"no sign-in within {self.timeout:g} s") from None
        finally:
            await redirect.close()
        return await client.exchange_code(code, verifier, redirect_uri)
