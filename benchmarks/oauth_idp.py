"""A real OAuth 2.0 / OpenID Connect provider on loopback, built on authlib's
:class:`~authlib.oauth2.AuthorizationServer`, for tests and benchmarks of callward's identity
layer (the way SIPp is the SIP peer of the edge tests).

What it serves (HTTP on 127.0.0.1, a thread of its own):

* ``/.well-known/openid-configuration`` (OIDC Discovery 1.0 §4) and ``/jwks`` (RFC 7517);
* ``/token`` (RFC 6749 §3.2) with two grants:

  - ``password`` *with a second factor*: the form must carry ``otp``, a TOTP code
    (RFC 6238) of the user's secret; a password alone is refused (``invalid_request``). This is
    the re-authentication path of the phone when its refresh token is gone;
  - ``refresh_token`` with rotation and reuse detection (OAuth 2.0 Security BCP,
    RFC 9700 §4.14.2): every refresh returns a new refresh token and retires the old one; a
    retired token presented again revokes the whole family (every refresh token descended from
    the same login), so a thief and the victim are both logged out;
* ``/revoke`` (RFC 7009).

Access tokens are ES256 JWTs (RFC 9068 profile: ``iss``, ``sub``, ``aud``, ``exp``, ``iat``,
``jti``, ``client_id``, ``scope``) plus a ``tenant`` claim. :meth:`LocalIdP.rotate_keys` adds a
new signing key and (optionally) drops the old one from the JWKS, so verifiers must follow
rotation. :meth:`stop` / :meth:`start` take the server off the network and bring it back on the
same port (an outage), :meth:`revoke_subject` revokes everything of one user.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pyotp
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Error, OAuth2Request, grants
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from oauth_idp_authcode import (
    AuthCodeWithPkce,
    CodeChallengeS256,
    check_login,
    check_loopback_redirect,
    login_page,
)

__all__ = ["LocalIdP", "User"]


@dataclass
class User:
    subject: str
    username: str
    password: str
    totp_secret: str
    tenant: str = "default"


@dataclass
class _Client:
    client_id: str
    scope: str

    def get_client_id(self) -> str:
        return self.client_id

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"  # a public (native) client, RFC 8252 §8.4

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("password", "refresh_token", "authorization_code")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_client_secret(self, secret: str) -> bool:
        return False

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or self.scope).split() if s in allowed)

    def check_redirect_uri(self, uri: str) -> bool:
        return check_loopback_redirect(uri)

    def get_default_redirect_uri(self) -> str:
        return ""


@dataclass
class _Refresh:
    """One refresh token. ``family`` is the login it descends from; ``used`` marks a token
    already exchanged (rotation), ``revoked`` a token killed by reuse detection or revocation."""

    token: str
    family: str
    user: User
    client_id: str
    scope: str
    issued_at: float
    lifetime: float
    used: bool = False
    revoked: bool = False

    def check_client(self, client: _Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.lifetime)

    def is_expired(self) -> bool:
        return False  # checked in _RefreshGrant with the IdP's clock

    def is_revoked(self) -> bool:
        return self.revoked


@dataclass
class IdPStats:
    token_requests: int = 0
    refreshes: int = 0
    logins: int = 0
    reuse_detected: int = 0
    refused: int = 0
    jwks_fetches: int = 0
    code_exchanges: int = 0
    code_replays: int = 0
    refreshes_by: dict[str, int] = field(default_factory=dict)  # subject -> refreshes


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, idp: LocalIdP) -> None:
        super().__init__(scopes_supported=idp.scopes)
        self.idp = idp
        self.register_token_generator("default", idp._generate)

    def query_client(self, client_id: str) -> _Client | None:
        return self.idp.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.idp._save(token, request)

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class _PasswordWithTotp(grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def authenticate_user(self, username: str, password: str) -> User | None:
        idp: LocalIdP = self.server.idp
        user = idp.users.get(username)
        otp = self.request.form.get("otp", "")
        if user is None or not secrets.compare_digest(user.password, password):
            return None
        # Second factor: RFC 6238 TOTP, one step of drift either way (§5.2).
        if not otp or not pyotp.TOTP(user.totp_secret).verify(otp, for_time=idp.clock(),
                                                              valid_window=1):  # fmt: skip
            return None
        if user.subject in idp.revoked_subjects:
            return None
        idp.stats.logins += 1
        return user


class _RotatingRefresh(grants.RefreshTokenGrant):  # type: ignore[misc]
    INCLUDE_NEW_REFRESH_TOKEN = True
    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    def authenticate_refresh_token(self, refresh_token: str) -> _Refresh | None:
        idp: LocalIdP = self.server.idp
        with idp.lock:
            rec = idp.refresh_tokens.get(refresh_token)
            if rec is None or rec.revoked:
                return None
            if rec.used:  # a rotated-out token came back: RFC 9700 §4.14.2 reuse detection
                idp.stats.reuse_detected += 1
                idp.revoke_family(rec.family)
                return None
            if idp.clock() > rec.issued_at + rec.lifetime:
                return None
            if rec.user.subject in idp.revoked_subjects:
                return None
            return rec

    def authenticate_user(self, refresh_token: _Refresh) -> User:
        self.request.family = refresh_token.family
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: _Refresh) -> None:
        refresh_token.used = True
        stats = self.server.idp.stats
        stats.refreshes += 1
        sub = refresh_token.user.subject
        stats.refreshes_by[sub] = stats.refreshes_by.get(sub, 0) + 1


@dataclass
class LocalIdP:
    """See the module docstring. ``clock`` is the IdP's own clock (a test may skew it)."""

    audience: str = "sip:callward.local"
    client_id: str = "callward-phone"
    scopes: list[str] = field(default_factory=lambda: ["sip", "sync", "telemetry"])
    access_ttl: float = 300.0
    refresh_ttl: float = 30 * 86400.0
    clock: Callable[[], float] = time.time
    users: dict[str, User] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.clients = {self.client_id: _Client(self.client_id, " ".join(self.scopes))}
        self.refresh_tokens: dict[str, _Refresh] = {}
        self.codes: dict[str, Any] = {}  # authorization codes (oauth_idp_authcode)
        self.revoked_subjects: set[str] = set()
        self.stats = IdPStats()
        self.keys: list[ECKey] = []
        self.rotate_keys()
        self.server = _Server(self)
        self.server.register_grant(_PasswordWithTotp)
        self.server.register_grant(_RotatingRefresh)
        self.server.register_grant(AuthCodeWithPkce, [CodeChallengeS256(required=True)])
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- administration (what an operator or the test does)

    def add_user(self, username: str, password: str, *, tenant: str = "default") -> User:
        user = User(
            subject=f"sub-{secrets.token_hex(8)}",
            username=username,
            password=password,
            totp_secret=pyotp.random_base32(),
            tenant=tenant,
        )
        self.users[username] = user
        return user

    def totp(self, username: str) -> str:
        """The current TOTP code of ``username`` (what their authenticator app shows)."""
        return pyotp.TOTP(self.users[username].totp_secret).at(self.clock())

    def rotate_keys(self, *, keep_old: bool = True) -> str:
        """Sign with a new key from now on; the old one stays in the JWKS unless ``keep_old``
        is False (an emergency rotation). Returns the new ``kid``."""
        kid = f"k{len(self.keys) + 1}-{secrets.token_hex(4)}"
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig", "alg": "ES256"})
        with self.lock:
            self.keys = [*self.keys, key] if keep_old else [key]
        return kid

    def revoke_family(self, family: str) -> None:
        with self.lock:
            for rec in self.refresh_tokens.values():
                if rec.family == family:
                    rec.revoked = True

    def revoke_subject(self, subject: str) -> None:
        with self.lock:
            self.revoked_subjects.add(subject)
            for rec in self.refresh_tokens.values():
                if rec.user.subject == subject:
                    rec.revoked = True

    def jwks(self) -> dict[str, Any]:
        with self.lock:
            return KeySet(list(self.keys)).as_dict(private=False)

    # ---- token issuing (called by authlib)

    def _generate(
        self,
        grant_type: str,
        client: _Client,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        assert user is not None
        now = self.clock()
        claims = {
            "iss": self.issuer,
            "sub": user.subject,
            "aud": self.audience,
            "client_id": client.client_id,
            "scope": scope or "",
            "tenant": user.tenant,
            "iat": int(now),
            "exp": int(now + self.access_ttl),
            "jti": secrets.token_urlsafe(12),
        }
        key = self.keys[-1]
        access = jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, claims, key)
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": access,
            "expires_in": int(self.access_ttl),
            "scope": scope or "",
        }
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def _save(self, token: dict[str, Any], request: OAuth2Request) -> None:
        if "refresh_token" not in token:
            return
        family = getattr(request, "family", None) or secrets.token_hex(8)
        with self.lock:
            self.refresh_tokens[token["refresh_token"]] = _Refresh(
                token=token["refresh_token"],
                family=family,
                user=request.user,
                client_id=request.client.client_id,
                scope=token.get("scope", ""),
                issued_at=self.clock(),
                lifetime=self.refresh_ttl,
            )

    # ---- HTTP

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "revocation_endpoint": f"{self.issuer}/revoke",
            "grant_types_supported": ["authorization_code", "password", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": self.scopes,
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
        }

    def handle(self, method: str, path: str, form: dict[str, str]) -> tuple[int, Any]:
        if method == "GET" and path == "/.well-known/openid-configuration":
            return 200, self.metadata()
        if method == "GET" and path == "/jwks":
            self.stats.jwks_fetches += 1
            return 200, self.jwks()
        if method == "POST" and path == "/token":
            self.stats.token_requests += 1
            req = _FormRequest(f"{self.issuer}/token", form)
            status, body, _ = self.server.create_token_response(req)
            if status != 200:
                self.stats.refused += 1
            return status, body
        if method == "POST" and path == "/revoke":
            rec = self.refresh_tokens.get(form.get("token", ""))
            if rec is not None:
                self.revoke_family(rec.family)
            return 200, {}
        return 404, {"error": "not_found"}

    def authorize(
        self, method: str, query: dict[str, str], form: dict[str, str]
    ) -> tuple[int, str, list[tuple[str, str]]]:
        """The authorization endpoint (oauth_idp_authcode): the login page on GET, a 302 to
        the app's loopback redirect URI on POST. Returns (status, HTML body, headers)."""
        params = {**query, **{k: v for k, v in form.items()
                              if k not in ("username", "password", "otp")}}  # fmt: skip
        req = _FormRequest(f"{self.issuer}/authorize", params, params)
        try:
            grant = self.server.get_consent_grant(req)
        except OAuth2Error as exc:  # bad client or redirect URI: never redirect (§4.1.2.1)
            return 400, f"<p>authorization request refused: {exc.error}</p>", []
        if method == "GET":
            return 200, login_page(params), []
        user = check_login(self, form)
        if user is None:
            self.stats.refused += 1
        status, _, headers = self.server.create_authorization_response(req, user, grant)
        return status, "", list(headers)

    def start(self) -> LocalIdP:
        """Listen (again) on 127.0.0.1; a restart reuses the port of the first start."""
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _page(self, status: int, body: str, headers: list[tuple[str, str]]) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/authorize":
                    self._page(*idp.authorize("GET", dict(parse_qsl(query)), {}))
                    return
                self._reply(*idp.handle("GET", self.path, {}))

            def do_POST(self) -> None:
                size = min(int(self.headers.get("Content-Length") or 0), 65536)
                raw = self.rfile.read(size).decode("utf-8", "replace")
                path, _, query = self.path.partition("?")
                if path == "/authorize":
                    self._page(*idp.authorize("POST", dict(parse_qsl(query)),
                                              dict(parse_qsl(raw))))  # fmt: skip
                    return
                self._reply(*idp.handle("POST", self.path, dict(parse_qsl(raw))))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="idp")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the IdP off the network (connections are refused until :meth:`start`)."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


class _FormRequest(OAuth2Request):  # type: ignore[misc]
    """authlib's request for a parsed form body (what its Flask/Django integrations build)."""

    def __init__(self, uri: str, form: dict[str, str], args: dict[str, str] | None = None) -> None:
        super().__init__("POST", uri, headers={})
        self.payload = BasicOAuth2Payload(form)
        self._form = form
        self._args = args or {}

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form
