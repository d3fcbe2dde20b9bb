"""The authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636) of the local IdP
(:mod:`oauth_idp`), the flow a native app is told to use (RFC 8252; RFC 9700 §2.4 forbids the
password grant for new deployments).

* ``GET /authorize?response_type=code&client_id=..&redirect_uri=..&code_challenge=..`` checks
  the request (authlib) and answers the login page: user name, password *and* a TOTP code
  (RFC 6238): the second factor is asked by the IdP, the app never sees the password;
* ``POST /authorize`` with the same parameters plus the form answers ``302`` to the redirect
  URI with ``code`` and ``state`` (or ``error=access_denied`` on a wrong password or code);
* ``POST /token`` with ``grant_type=authorization_code``, ``code``, ``redirect_uri`` and
  ``code_verifier`` exchanges the code once (authlib's :class:`CodeChallenge`, ``S256`` only).

Redirect URIs: loopback only, ``http://127.0.0.1:<any port>/callback`` (RFC 8252 §7.3: the
port is chosen by the app at run time). A code lives 60 s and is good for one exchange; a
second exchange revokes the refresh-token family it produced (RFC 6749 §4.1.2).
"""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyotp
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc7636 import CodeChallenge

if TYPE_CHECKING:
    from oauth_idp import LocalIdP, User

__all__ = ["AuthCodeWithPkce", "CodeChallengeS256", "check_loopback_redirect", "login_page"]

CODE_LIFETIME = 60.0


def check_loopback_redirect(uri: str) -> bool:
    """RFC 8252 §7.3: ``http://127.0.0.1:<port>/callback``, any port, nothing else."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "http" and parts.hostname == "127.0.0.1" and port is not None
        and parts.path == "/callback" and not parts.fragment
    )  # fmt: skip


@dataclass
class _Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: User
    code_challenge: str
    code_challenge_method: str
    issued_at: float
    family: str
    used: bool = False

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class CodeChallengeS256(CodeChallenge):  # type: ignore[misc]
    """PKCE required, and ``S256`` only: ``plain`` protects nothing once the request leaks
    (RFC 7636 §7.2; RFC 9700 §2.1.1)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        if not grant.request.payload.data.get("code_challenge"):
            from authlib.oauth2.rfc6749 import InvalidRequestError

            raise InvalidRequestError("Missing 'code_challenge' (PKCE S256 is required)")
        super().validate_code_challenge(grant, redirect_uri)


class AuthCodeWithPkce(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        idp: LocalIdP = self.server.idp
        data = request.payload.data
        with idp.lock:
            idp.codes[code] = _Code(
                code=code, client_id=request.client.client_id,
                redirect_uri=request.payload.redirect_uri, scope=request.scope or "",
                user=request.user, code_challenge=data.get("code_challenge", ""),
                code_challenge_method=data.get("code_challenge_method", "S256"),
                issued_at=idp.clock(), family=secrets.token_hex(8),
            )  # fmt: skip

    def query_authorization_code(self, code: str, client: Any) -> _Code | None:
        idp: LocalIdP = self.server.idp
        with idp.lock:
            rec = idp.codes.get(code)
            if rec is None or rec.client_id != client.client_id:
                return None
            if rec.used:  # a second exchange: kill what the first one produced
                idp.stats.code_replays += 1
                idp.revoke_family(rec.family)
                return None
            if idp.clock() > rec.issued_at + CODE_LIFETIME:
                return None
            self.request.family = rec.family
            return rec

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        authorization_code.used = True

    def authenticate_user(self, authorization_code: _Code) -> User | None:
        idp: LocalIdP = self.server.idp
        if authorization_code.user.subject in idp.revoked_subjects:
            return None
        idp.stats.code_exchanges += 1
        return authorization_code.user


def login_page(params: dict[str, str], error: str = "") -> str:
    """The IdP's login form: the authorization request travels in hidden fields."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
    )
    note = f"<p class=error>{html.escape(error)}</p>" if error else ""
    return (
        "<!doctype html><title>callward local IdP</title><h1>Sign in</h1>" + note
        + '<form method="post" action="/authorize">' + hidden
        + '<label>User <input name="username" autocomplete="username"></label>'
        + '<label>Password <input name="password" type="password"></label>'
        + '<label>Code from your authenticator <input name="otp" inputmode="numeric"></label>'
        + "<button>Sign in</button></form>"
    )  # fmt: skip


def check_login(idp: LocalIdP, form: dict[str, str]) -> User | None:
    """Password *and* TOTP (RFC 6238 §5.2: one step of drift either way)."""
    user = idp.users.get(form.get("username", ""))
    if user is None or not secrets.compare_digest(user.password, form.get("password", "")):
        return None
    otp = form.get("otp", "")
    if not otp or not pyotp.TOTP(user.totp_secret).verify(otp, for_time=idp.clock(),
                                                          valid_window=1):  # fmt: skip
        return None
    if user.subject in idp.revoked_subjects:
        return None
    idp.stats.logins += 1
    return user


def browser_sign_in(url: str, username: str, password: str, otp: str) -> int:
    """What the user does in a browser: open ``url`` (the IdP's login page), fill in the form
    and follow the redirect to the app's loopback listener. Returns the listener's status."""
    import re

    import httpx

    with httpx.Client(timeout=10.0, trust_env=False) as browser:
        page = browser.get(url)
        page.raise_for_status()
        fields = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        fields = {html.unescape(k): html.unescape(v) for k, v in fields.items()}
        answer = browser.post(
            str(page.url.join("/authorize")),
            data={**fields, "username": username, "password": password, "otp": otp},
        )
        if answer.status_code != 302:
            return answer.status_code
        return browser.get(answer.headers["Location"]).status_code
