"""The edge core's extension points: explicit interfaces other packages plug into.

Three hooks, each a small :class:`~typing.Protocol` passed to
:class:`~callward.edge.proxy.EdgeCore` (``core.hooks``) and documented in
docs/architecture.md ("Edge"):

- :class:`AdmissionPolicy`: consulted for every request before any processing (after the
  datagram parsed and the per-source rate limit); answers :data:`ACCEPT`, :class:`Reject`
  (a stateless final response such as 403 or 503 + Retry-After) or :class:`Drop` (silence).
  The overload guard (:mod:`callward.edge.overload`) is one.
- :class:`AuthScheme`: one way of authenticating a request (Digest today, RFC 8898 Bearer
  next). The :class:`~callward.edge.auth.Authenticator` tries the scheme whose credentials the
  request carries and challenges with every scheme when it carries none.
- :class:`MediaAnchor`: sees every request the proxy forwards and every response it relays
  upstream, and may rewrite them (SDP for a media relay), asking questions through
  :mod:`callward.edge.pending` while it works; ``on_end`` runs once per call that ends.
- :class:`BoundaryFilter`: sees every request forwarded to, and every response relayed to, a
  peer in ``edge.untrusted`` (after topology hiding and RFC 3323 privacy) and may rewrite its
  headers: the privacy area strips or pseudonymises IMSI/IMEI/MSISDN there
  (:mod:`callward.privacy.boundary_filter`).

Hooks are synchronous for admission (it runs per datagram) and generators (that may yield
:class:`~callward.edge.pending.Query` objects) for authentication and media.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

from callward.edge.pending import Query
from callward.sip.message import Request, Response
from callward.sip.peer import Peer

__all__ = [
    "ACCEPT",
    "Accept",
    "AdmissionPolicy",
    "AuthRefused",
    "AuthScheme",
    "Authenticated",
    "BoundaryFilter",
    "Drop",
    "Hooks",
    "MediaAnchor",
    "Reject",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class Accept:
    """Process the request."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the request at once with ``status`` (never an ACK: ACKs are dropped)."""

    status: int
    reason: str | None = None
    retry_after: int | None = None  # seconds, RFC 3261 §20.33 (with 503)
    rule: str = "policy"  # metric label and SecurityAlert rule (bounded vocabulary)
    headers: tuple[tuple[str, str], ...] = ()  # extra header lines (e.g. a stateless 407's)


@dataclass(frozen=True, slots=True)
class Drop:
    """Say nothing (a scanner, a flood): the request is counted and forgotten."""

    rule: str = "policy"


Verdict = Accept | Reject | Drop
ACCEPT = Accept()


class AdmissionPolicy(Protocol):
    """Decides whether a request is processed at all. ``in_dialog`` is True for requests with
    a To tag (ACK, BYE, re-INVITE), which policies should let through under load."""

    def admit(self, request: Request, peer: Peer, *, in_dialog: bool, now: float) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who sent the request, per the scheme that verified it."""

    username: str
    tenant: str = "default"
    scheme: str = "Digest"


@dataclass(frozen=True, slots=True)
class AuthRefused:
    """A scheme's refusal. ``status`` 0 means "challenge again" (the
    :class:`~callward.edge.auth.Authenticator` answers 401/407 with every scheme's challenges,
    ``stale`` passed on); otherwise that final status (403...) with ``reason``."""

    status: int = 0
    reason: str | None = None
    stale: bool = False


class AuthScheme(Protocol):
    """One authentication scheme (RFC 3261 §22 framework: 401/407, *-Authenticate,
    [Proxy-]Authorization). ``proxy`` selects the 407 / Proxy-* header pair."""

    scheme: str

    def has_credentials(self, request: Request, *, proxy: bool) -> bool:
        """The request carries credentials of this scheme for us."""
        ...

    def challenges(
        self, request: Request, now: float, *, proxy: bool, stale: bool = False
    ) -> list[tuple[str, str]]:
        """The ``(WWW|Proxy)-Authenticate`` header lines this scheme adds to a 401/407."""
        ...

    def verify(
        self, request: Request, now: float, *, proxy: bool
    ) -> Generator[Query, object, Authenticated | AuthRefused]:
        """Check the credentials (only called when :meth:`has_credentials`): who it is, or
        why not."""
        ...


class MediaAnchor(Protocol):
    """Rewrites what the proxy forwards (e.g. SDP through a media relay). ``request`` is called
    once per forwarded request (INVITE, re-INVITE, UPDATE, ACK with SDP, BYE...) before it is
    copied to its branches; ``response`` once per response relayed upstream (183, 200...);
    ``ended`` once per tracked call that ends (BYE, failure, CANCEL, session expiry)."""

    def request(self, request: Request, now: float) -> Generator[Query, object, Request]: ...

    def response(
        self, response: Response, request: Request, now: float
    ) -> Generator[Query, object, Response]: ...

    def ended(self, call_id: str, now: float) -> Generator[Query, object, None]: ...


class BoundaryFilter(Protocol):
    """Rewrites what crosses the trust boundary toward an untrusted peer (synchronous: header
    edits only, no store questions)."""

    def request(self, request: Request) -> Request: ...

    def response(self, response: Response) -> Response: ...


@dataclass(slots=True)
class Hooks:
    """The hooks of one core, in the order they run. Mutable: a composition root appends."""

    admission: list[AdmissionPolicy]
    auth_schemes: list[AuthScheme]
    media: MediaAnchor | None = None
    boundary: BoundaryFilter | None = None
