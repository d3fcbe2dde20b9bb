"""Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760), sans-IO.

Server side without a nonce table: a nonce is ``base64url(timestamp ‖ random ‖ HMAC)``
signed with a server secret (RFC 7616 §3.3 suggests exactly this shape), so any edge node that
shares the secret can check it, an expired one earns ``stale=true`` (RFC 2617 §3.2.1) and a
forged or tampered one is rejected. The only state is a bounded nonce-count window that
catches replays of a (nonce, nc) pair (RFC 7616 §3.4 "nc").

Passwords are never stored: the registrar keeps ``HA1 = H(user:realm:password)`` per algorithm
(:func:`ha1_set`) and looks it up through an injected callable.

Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess (RFC 8760 §2).
qop: ``auth`` and ``auth-int`` (the body hash goes into HA2).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from callward.errors import AuthError, SipParseError
from callward.sip.headers import AuthHeader, parse_auth
from callward.sip.message import Request, Response, make_response
from callward.sip.uri import SipURI, parse_uri

__all__ = [
    "AuthOutcome",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAlgorithm",
    "DigestVerifier",
    "Ha1Lookup",
    "NonceCounter",
    "NonceSigner",
    "NonceState",
    "answer_challenge",
    "authorize",
    "best_challenges",
    "digest_response",
    "ha1",
    "ha1_set",
]


class DigestAlgorithm(enum.Enum):
    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"
    SHA512_256 = "SHA-512-256"
    SHA512_256_SESS = "SHA-512-256-sess"

    @property
    def session(self) -> bool:
        return self.value.endswith("-sess")

    @property
    def base(self) -> DigestAlgorithm:
        """The algorithm whose HA1 is stored (``-sess`` variants derive theirs per nonce)."""
        return DigestAlgorithm(self.value.removesuffix("-sess"))

    @classmethod
    def parse(cls, text: str | None) -> DigestAlgorithm:
        """Case-insensitive; absent means MD5 (RFC 2617 §3.2.1)."""
        if text is None:
            return cls.MD5
        for alg in cls:
            if alg.value.lower() == text.strip().lower():
                return alg
        raise AuthError(f"unsupported digest algorithm {text[:30]!r} (RFC 8760 §2)")


_HASHES: dict[DigestAlgorithm, str] = {
    DigestAlgorithm.MD5: "md5",
    DigestAlgorithm.SHA256: "sha256",
    DigestAlgorithm.SHA512_256: "sha512_256",
}


def _h(alg: DigestAlgorithm, data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.new(_HASHES[alg.base], raw).hexdigest()


def ha1(alg: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """``H(username ":" realm ":" password)``: what a registrar stores (never the password).
    For ``-sess`` algorithms this is the stored base value; the session HA1 adds nonce and
    cnonce inside :func:`digest_response`."""
    return _h(alg.base, f"{username}:{realm}:{password}")


def ha1_set(
    username: str,
    realm: str,
    password: str,
    algorithms: Iterable[DigestAlgorithm] = (
        DigestAlgorithm.MD5,
        DigestAlgorithm.SHA256,
        DigestAlgorithm.SHA512_256,
    ),
) -> dict[str, str]:
    """HA1 per base algorithm name, ready to store next to the user (password discarded)."""
    return {a.base.value: ha1(a, username, realm, password) for a in algorithms}


def digest_response(
    alg: DigestAlgorithm,
    ha1_hex: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1):
    ``KD(HA1, nonce:nc:cnonce:qop:HA2)`` with qop, ``KD(HA1, nonce:HA2)`` without (RFC 2069)."""
    if alg.session:
        if cnonce is None:
            raise AuthError(f"{alg.value} needs a cnonce (RFC 7616 §3.4.2)")
        ha1_hex = _h(alg, f"{ha1_hex}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _h(alg, f"{method}:{uri}:{_h(alg, body)}")
    else:
        ha2 = _h(alg, f"{method}:{uri}")
    if qop is None:
        return _h(alg, f"{ha1_hex}:{nonce}:{ha2}")
    if qop not in ("auth", "auth-int"):
        raise AuthError(f"unsupported qop {qop[:20]!r} (RFC 7616 §3.3)")
    if nc is None or cnonce is None:
        raise AuthError("qop needs nc and cnonce (RFC 7616 §3.4)")
    return _h(alg, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------- header values


def _parse_digest(value: str) -> AuthHeader:
    try:
        header = parse_auth(value)
    except SipParseError as exc:
        raise AuthError(f"malformed digest header: {exc}") from exc
    if header.scheme.lower() != "digest":
        raise AuthError(f"auth scheme {header.scheme[:20]!r} is not Digest")
    return header


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Challenge:
    """A WWW-Authenticate / Proxy-Authenticate Digest challenge."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[str, ...] = ("auth",)
    opaque: str | None = None
    stale: bool = False

    def __str__(self) -> str:
        parts = [f"realm={_q(self.realm)}", f"nonce={_q(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_q(self.opaque)}")
        parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            parts.append(f"qop={_q(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)

    @classmethod
    def parse(cls, value: str) -> Challenge:
        h = _parse_digest(value)
        realm, nonce = h.get("realm"), h.get("nonce")
        if realm is None or nonce is None:
            raise AuthError("digest challenge lacks realm or nonce (RFC 7616 §3.3)")
        qop = tuple(q.strip() for q in (h.get("qop") or "").split(",") if q.strip())
        return cls(
            realm,
            nonce,
            DigestAlgorithm.parse(h.get("algorithm")),
            qop,
            h.get("opaque"),
            (h.get("stale") or "").lower() == "true",
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """An Authorization / Proxy-Authorization Digest answer."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def __str__(self) -> str:
        parts = [
            f"username={_q(self.username)}",
            f"realm={_q(self.realm)}",
            f"nonce={_q(self.nonce)}",
            f"uri={_q(self.uri)}",
            f"response={_q(self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_q(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_q(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        return "Digest " + ", ".join(parts)

    @classmethod
    def parse(cls, value: str) -> Credentials:
        h = _parse_digest(value)
        need = {k: h.get(k) for k in ("username", "realm", "nonce", "uri", "response")}
        missing = [k for k, v in need.items() if v is None]
        if missing:
            raise AuthError(f"digest credentials lack {', '.join(missing)} (RFC 7616 §3.4)")
        return cls(
            need["username"] or "",
            need["realm"] or "",
            need["nonce"] or "",
            need["uri"] or "",
            need["response"] or "",
            DigestAlgorithm.parse(h.get("algorithm")),
            h.get("qop"),
            h.get("nc"),
            h.get("cnonce"),
            h.get("opaque"),
        )


# ---------------------------------------------------------------- stateless nonces


class NonceState(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # genuine but expired: answer with stale=true
    INVALID = "invalid"  # forged, tampered, from another realm/secret, or malformed


class NonceSigner:
    """Issues and checks HMAC-SHA256-signed nonces embedding their issue time.

    Layout (32 bytes, base64url without padding): ``ms since epoch (8) ‖ random (8) ‖
    HMAC-SHA256(secret, ts ‖ random ‖ realm ‖ bind)[:16]``. ``bind`` ties a nonce to
    something the caller chooses (e.g. the client's address) to stop nonce theft."""

    def __init__(self, secret: bytes, *, realm: str = "", ttl: float = 300.0) -> None:
        if len(secret) < 16:
            raise AuthError("nonce secret must be at least 16 bytes")
        self._secret = secret
        self._realm = realm.encode("utf-8")
        self.ttl = ttl

    def _mac(self, head: bytes, bind: str) -> bytes:
        msg = head + b"\x00" + self._realm + b"\x00" + bind.encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:16]

    def issue(
        self, now: float, *, bind: str = "", token: Callable[[int], bytes] = secrets.token_bytes
    ) -> str:
        head = struct.pack(">Q", max(0, int(now * 1000))) + token(8)
        raw = head + self._mac(head, bind)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, nonce: str, now: float, *, bind: str = "") -> NonceState:
        if len(nonce) != 43:
            return NonceState.INVALID
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except (ValueError, TypeError):
            return NonceState.INVALID
        if len(raw) != 32:
            return NonceState.INVALID
        head, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(head, bind)):
            return NonceState.INVALID
        (issued_ms,) = struct.unpack(">Q", head[:8])
        age = now - issued_ms / 1000
        if age < -5.0:  # from the future beyond clock skew: not ours
            return NonceState.INVALID
        return NonceState.STALE if age > self.ttl else NonceState.VALID


class NonceCounter:
    """Replay check on nonce-count (RFC 7616 §3.4): each (nonce, nc) is accepted once; counts
    may arrive out of order within ``window`` of the highest seen (UDP reorders). Memory is
    bounded by ``capacity`` nonces (least recently used evicted; an evicted nonce restarts
    its window, so capacity must exceed live nonces × their lifetime)."""

    def __init__(self, *, capacity: int = 100_000, window: int = 64) -> None:
        self.capacity = capacity
        self.window = window
        self._seen: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def accept(self, nonce: str, nc: int) -> bool:
        if nc <= 0:
            return False
        top, mask = self._seen.get(nonce, (0, 0))
        if nc > top:
            shift = nc - top
            mask = ((mask << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            top = nc
        else:
            offset = top - nc
            if offset >= self.window or mask >> offset & 1:
                return False
            mask |= 1 << offset
        self._seen[nonce] = (top, mask)
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


# ---------------------------------------------------------------- verifier (server side)


class AuthOutcome(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    STALE = "stale"  # right password, expired nonce: challenge with stale=true
    FAILED = "failed"  # wrong password, unknown user, forged nonce, replay: challenge


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


Ha1Lookup = Callable[[str, str, DigestAlgorithm], str | None]
"""``(username, realm, base algorithm) -> HA1 hex`` or None for an unknown user."""


class DigestVerifier:
    """Challenges and verifies one realm. ``proxy=True`` uses Proxy-Authenticate /
    Proxy-Authorization and 407 (§22.3) instead of WWW-Authenticate / Authorization / 401."""

    def __init__(
        self,
        realm: str,
        secret: bytes,
        lookup: Ha1Lookup,
        *,
        algorithms: Sequence[DigestAlgorithm] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        qop: Sequence[str] = ("auth", "auth-int"),
        nonce_ttl: float = 300.0,
        proxy: bool = False,
        require_qop: bool = True,
        check_uri: bool = True,
        counter: NonceCounter | None = None,
    ) -> None:
        if not algorithms:
            raise AuthError("at least one digest algorithm is needed")
        self.realm = realm
        self.lookup = lookup
        self.algorithms = tuple(algorithms)
        self.qop = tuple(qop)
        self.proxy = proxy
        self.require_qop = require_qop and bool(qop)
        self.check_uri = check_uri
        self.signer = NonceSigner(secret, realm=realm, ttl=nonce_ttl)
        self.counter = counter or NonceCounter()
        self.opaque = hmac.new(secret, b"opaque\x00" + realm.encode(), "sha256").hexdigest()[:24]

    @property
    def challenge_header(self) -> str:
        return "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"

    @property
    def credentials_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"

    def challenges(self, now: float, *, stale: bool = False, bind: str = "") -> list[Challenge]:
        """One challenge per algorithm, preferred first (RFC 8760 §2.4), sharing one nonce."""
        nonce = self.signer.issue(now, bind=bind)
        return [
            Challenge(self.realm, nonce, a, self.qop, self.opaque, stale) for a in self.algorithms
        ]

    def challenge_response(
        self,
        request: Request,
        now: float,
        *,
        stale: bool = False,
        to_tag: str | None = None,
        bind: str = "",
    ) -> Response:
        """The 401 / 407 carrying our challenges (§22.1)."""
        extra = [
            (self.challenge_header, str(c)) for c in self.challenges(now, stale=stale, bind=bind)
        ]
        return make_response(request, 407 if self.proxy else 401, to_tag=to_tag, extra=extra)

    def verify(self, request: Request, now: float, *, bind: str = "") -> AuthResult:
        """Check the request's credentials for our realm (§22.4, RFC 7616 §3.4)."""
        creds: Credentials | None = None
        for value in request.headers.get_lines(self.credentials_header):
            try:
                c = Credentials.parse(value)
            except AuthError as exc:
                return AuthResult(AuthOutcome.FAILED, None, str(exc))
            if c.realm == self.realm:
                creds = c
                break
        if creds is None:
            return AuthResult(AuthOutcome.MISSING)
        user = creds.username
        if creds.algorithm not in self.algorithms:
            return AuthResult(AuthOutcome.FAILED, user, "algorithm not offered")
        state = self.signer.check(creds.nonce, now, bind=bind)
        if state is NonceState.INVALID:
            return AuthResult(AuthOutcome.FAILED, user, "nonce not issued by us")
        if creds.opaque is not None and creds.opaque != self.opaque:
            return AuthResult(AuthOutcome.FAILED, user, "opaque mismatch")
        if self.check_uri and not _same_uri(creds.uri, request):
            # RFC 7616 §3.4.6 / RFC 2617 §3.2.2.5: the digest-uri must name the Request-URI
            # (else a captured response could authorize a request for another target).
            return AuthResult(AuthOutcome.FAILED, user, "digest uri differs from Request-URI")
        nc_value = 0
        if creds.qop is not None:
            if creds.qop not in self.qop:
                return AuthResult(AuthOutcome.FAILED, user, "qop not offered")
            nc_text = creds.nc or ""
            if len(nc_text) != 8 or not all(ch in "0123456789abcdefABCDEF" for ch in nc_text):
                return AuthResult(AuthOutcome.FAILED, user, "nc must be 8 hex digits")
            if not creds.cnonce:
                return AuthResult(AuthOutcome.FAILED, user, "qop without cnonce")
            nc_value = int(nc_text, 16)
        elif self.require_qop:
            return AuthResult(AuthOutcome.FAILED, user, "qop required")
        stored = self.lookup(user, self.realm, creds.algorithm.base)
        if stored is None:
            return AuthResult(AuthOutcome.FAILED, user, "bad credentials")
        try:
            expected = digest_response(
                creds.algorithm,
                stored,
                nonce=creds.nonce,
                method=request.method,
                uri=creds.uri,
                qop=creds.qop,
                nc=creds.nc,
                cnonce=creds.cnonce,
                body=request.body,
            )
        except AuthError as exc:
            return AuthResult(AuthOutcome.FAILED, user, str(exc))
        if not hmac.compare_digest(expected, creds.response.lower()):
            return AuthResult(AuthOutcome.FAILED, user, "bad credentials")
        if state is NonceState.STALE:
            return AuthResult(AuthOutcome.STALE, user, "nonce expired")
        if creds.qop is not None and not self.counter.accept(creds.nonce, nc_value):
            return AuthResult(AuthOutcome.FAILED, user, "nonce-count replayed")
        return AuthResult(AuthOutcome.OK, user)


def _same_uri(digest_uri: str, request: Request) -> bool:
    """Equal text, or equivalent SIP URIs by §19.1.4 (clients re-serialize differently)."""
    if digest_uri == str(request.uri):
        return True
    try:
        parsed = parse_uri(digest_uri)
    except SipParseError:
        return False
    return isinstance(parsed, SipURI) and parsed.equivalent(request.uri)


# ---------------------------------------------------------------- client side

_PREFERENCE = {
    DigestAlgorithm.SHA512_256: 0, DigestAlgorithm.SHA512_256_SESS: 1,
    DigestAlgorithm.SHA256: 2, DigestAlgorithm.SHA256_SESS: 3,
    DigestAlgorithm.MD5: 4, DigestAlgorithm.MD5_SESS: 5,
}  # fmt: skip


def answer_challenge(
    challenge: Challenge,
    *,
    username: str,
    method: str,
    uri: str,
    password: str | None = None,
    ha1_hex: str | None = None,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> Credentials:
    """Credentials for one challenge. Uses qop=auth-int when offered and there is a body,
    else auth, else the RFC 2069 form. ``cnonce`` defaults to a fresh random value."""
    if ha1_hex is None:
        if password is None:
            raise AuthError("answer_challenge needs a password or an HA1")
        ha1_hex = ha1(challenge.algorithm, username, challenge.realm, password)
    qop: str | None = None
    if "auth-int" in challenge.qop and body:
        qop = "auth-int"
    elif "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    need_cnonce = qop is not None or challenge.algorithm.session
    if need_cnonce and cnonce is None:
        cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}" if qop is not None else None
    response = digest_response(
        challenge.algorithm,
        ha1_hex,
        nonce=challenge.nonce,
        method=method,
        uri=uri,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce if need_cnonce else None,
        body=body,
    )
    return Credentials(
        username,
        challenge.realm,
        challenge.nonce,
        uri,
        response,
        challenge.algorithm,
        qop,
        nc_text,
        cnonce if need_cnonce else None,
        challenge.opaque,
    )


def best_challenges(response: Response) -> dict[str, Challenge]:
    """The strongest Digest challenge per realm of a 401/407 (RFC 8760 §2.4); AuthError when
    none is usable. A UA keeps these to answer later requests without a new round trip."""
    name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    best: dict[str, Challenge] = {}
    for value in response.headers.get_lines(name):
        try:
            c = Challenge.parse(value)
        except AuthError:
            continue  # another scheme or an algorithm we do not know
        cur = best.get(c.realm)
        if cur is None or _PREFERENCE[c.algorithm] < _PREFERENCE[cur.algorithm]:
            best[c.realm] = c
    if not best:
        raise AuthError(f"no usable Digest challenge in the {response.status} response")
    return best


def authorize(
    request: Request,
    response: Response,
    *,
    username: str,
    password: str,
    cnonce: str | None = None,
) -> Request:
    """Add (Proxy-)Authorization answering a 401/407 (§22.2, §22.3), one per realm, choosing
    the strongest algorithm offered for each realm (RFC 8760 §2.4). CSeq and branch are the
    UA's business (the retry is a new transaction, §8.1.3.5)."""
    proxy = response.status == 407
    best = best_challenges(response)
    headers = request.headers.remove("Proxy-Authorization" if proxy else "Authorization")
    for c in best.values():
        creds = answer_challenge(
            c,
            username=username,
            password=password,
            method=request.method,
            uri=str(request.uri),
            body=request.body,
            cnonce=cnonce,
        )
        headers = headers.append("Proxy-Authorization" if proxy else "Authorization", str(creds))
    return request.replace(headers=headers)
