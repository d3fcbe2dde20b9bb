"""The edge's security components, plugged into the core's hooks (docs/security.md).

:class:`EdgeSecurity` is built by :class:`~callward.edge.proxy.EdgeCore` (on by default) and
holds the sans-IO policies; the core calls it at four points:

- **admission** (:class:`~callward.edge.hooks.AdmissionPolicy`): banned sources are dropped;
  scanners detected; token buckets per source / account / tenant, unauthenticated traffic
  apart from credentialed traffic (:mod:`callward.edge.admission`);
- **authentication outcome** (:meth:`EdgeSecurity.checked`, the Authenticator's guard): failed
  credentials feed the per-account / per-source lockout; a locked account's attempts are
  refused *after* verification with exactly the answer a wrong password gets (same status,
  headers and work), so a brute-forcer learns nothing even when it guesses right;
- **relay policy** (:meth:`EdgeSecurity.relay_refusal`): a request for a foreign domain from an
  untrusted source that carries no credentials gets ``403 Not relaying``;
- **toll fraud** (:mod:`callward.edge.fraud`): per-tenant premium/international permission,
  concurrent-call caps, CPS and costly-call velocity per account.

Alerts go out as :class:`~callward.events.SecurityAlert` events through the core's outbox (the
bus, the runtime's alert log) and are counted in ``callward_edge_security_alerts{rule}``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence

import phonenumbers

from callward.edge.admission import Admission, AdmissionPolicy, RequestInfo, VerdictKind
from callward.edge.bounded_table import BoundedTable
from callward.edge.fraud import FraudGuard, FraudPolicy
from callward.edge.hooks import ACCEPT, Authenticated, AuthRefused, Drop, Reject, Verdict
from callward.errors import SipParseError
from callward.events import SecurityAlert
from callward.sip.headers import parse_auth
from callward.sip.message import Request
from callward.sip.peer import Peer
from callward.sip.uri import URI, SipURI, TelURI

__all__ = ["AUTH_METHODS", "UNTRUSTED_STRIP", "EdgeSecurity", "claimed_username", "strip_untrusted"]


class _AllMethodsBut:
    """Every method except a few: unknown and extension methods are authenticated too."""

    __slots__ = ("excluded",)

    def __init__(self, *excluded: str) -> None:
        self.excluded = frozenset(excluded)

    def __contains__(self, method: object) -> bool:
        return method not in self.excluded


# Out-of-dialog requests the edge authenticates (407) when they come from an untrusted source:
# all but REGISTER (the registrar's 401), and ACK/CANCEL, which belong to a transaction. An
# OPTIONS (or any request) to a *user* is authenticated too: answering it unauthenticated
# would tell a prober which users are online (their phones answer); requests to the edge
# itself (no user part: keep-alive OPTIONS) are answered without credentials.
AUTH_METHODS = _AllMethodsBut("REGISTER", "ACK", "CANCEL")

# Identity and access-network headers only a trusted node may state (RFC 3325 §5, RFC 7315
# §4.4: P-Access-Network-Info carries cell ids; Remote-Party-ID is the pre-3325 draft form).
UNTRUSTED_STRIP = (
    "P-Preferred-Identity",
    "Remote-Party-ID",
    "P-Access-Network-Info",
    "P-Visited-Network-ID",
    "P-Charging-Vector",
    "P-Charging-Function-Addresses",
    "P-Served-User",
    "P-Associated-URI",
)


def strip_untrusted(req: Request) -> Request:
    """Remove :data:`UNTRUSTED_STRIP` (a request from, or toward, an untrusted peer)."""
    headers = req.headers
    for name in UNTRUSTED_STRIP:
        if name in headers:
            headers = headers.remove(name)
    return req if headers is req.headers else req.replace(headers=headers)


def claimed_username(req: Request) -> str | None:
    """The username a request's Digest credentials claim (not yet verified)."""
    for name in ("Proxy-Authorization", "Authorization"):
        for value in req.headers.get_lines(name):
            try:
                user = parse_auth(value).get("username")
            except SipParseError:
                continue
            if user:
                return user[:128]
    return None


def _target(req: Request) -> str:
    uri = req.uri
    if isinstance(uri, SipURI):
        return (uri.user or uri.host)[:128]
    if isinstance(uri, TelURI):
        return uri.number[:64]
    return ""


class EdgeSecurity:
    def __init__(
        self,
        *,
        node: str,
        emit: Callable[[SecurityAlert], None],
        is_trusted: Callable[[Peer], bool],
        auth_on: Callable[[], bool] = lambda: True,
        challenge: Callable[[Request, float], list[tuple[str, str]]] | None = None,
        is_local: Callable[[URI], bool] | None = None,
        admission: AdmissionPolicy | None = None,
        fraud: FraudPolicy | None = None,
    ) -> None:
        self.admission = Admission(admission, node=node)
        self._node = node
        self._seq = 0
        self.fraud = FraudGuard(fraud, node=node)
        self._emit = emit
        self._is_trusted = is_trusted
        self._auth_on = auth_on
        self._challenge = challenge
        self._is_local = is_local
        self._domain_tenant: dict[str, str] = {}
        # Set by the core: is this Call-ID a call the edge set up (its dialog tracker)?
        self.known_call: Callable[[str], bool] | None = None
        self._subscriptions: BoundedTable[str, bool] = BoundedTable(65536)
        self._realm = ""
        self._country_codes: dict[str, str] = {}

    def alert(self, alert: SecurityAlert) -> None:
        """Raise an alert found outside the request path (certificate expiry)."""
        self._emit(alert)

    # ---- tenants
    def configure_tenants(self, tenant_domains: Mapping[str, Sequence[str]], realm: str) -> None:
        """``tenant -> domains`` (``edge.tenant_domains``). With a map, a subscriber may only
        register AORs, and place calls from and to local URIs, in its own tenant's domains;
        a domain not in the map (and our addresses, which mean ``realm``) is ``default``'s."""
        self._domain_tenant = {
            d.lower().rstrip("."): t for t, domains in tenant_domains.items() for d in domains
        }
        self._realm = realm.lower()

    def tenant_of_domain(self, host: str) -> str:
        h = host.lower().rstrip(".")
        if _is_address(h):
            h = self._realm
        return self._domain_tenant.get(h, "default")

    def _crosses_tenants(self, request: Request, tenant: str) -> bool:
        """True when an authenticated ``request`` names another tenant's domain (registering
        into it, calling as or into one of its users)."""
        if not self._domain_tenant:
            return False
        uris: list[URI] = []
        if request.method == "REGISTER":
            uris.append(request.to.uri)
        else:
            uris += [request.from_.uri, request.uri]
        for uri in uris:
            if not isinstance(uri, SipURI):
                continue
            if request.method != "REGISTER" and (self._is_local is None or not self._is_local(uri)):
                continue  # foreign domains: the relay and fraud policies decide
            if self.tenant_of_domain(uri.host) != tenant:
                return True
        return False

    # ---- AdmissionPolicy hook
    def admit(self, request: Request, peer: Peer, *, in_dialog: bool, now: float) -> Verdict:
        # With authentication off (the operator's choice) nobody can prove who they are, so
        # every source is accounted like an authenticated one (generous per-source buckets).
        trusted = self._is_trusted(peer) or not self._auth_on()
        account = claimed_username(request)
        credentialed = account is not None or any(
            name in request.headers for name in ("Proxy-Authorization", "Authorization")
        )
        frm = request.from_.uri
        tenant = frm.host.lower().rstrip(".")[:64] if isinstance(frm, SipURI) else "tel"
        contact = request.headers.get("Contact") or ""
        info = RequestInfo(
            source=peer.host,
            method=request.method,
            tenant=tenant,
            account=account if account is not None else (f"peer:{peer.host}" if trusted else None),
            authenticated=trusted or credentialed,
            in_dialog=in_dialog,
            user_agent=(request.headers.get("User-Agent") or "")[:200],
            target=_target(request),
            call_id=request.call_id[:128],
            contact=contact[:200],
        )
        verdict = self.admission.admit(info, now)
        self._flush()
        if verdict.kind is VerdictKind.ADMIT:
            if not in_dialog and trusted:
                self._subscribed(request)
            if request.method == "REGISTER" and not trusted and not self._registers_here(request):
                return Reject(403, "Not relaying", rule="not-relaying")
            if not in_dialog and not trusted and not credentialed:
                return self._unauthenticated(request, now)
            if in_dialog and not trusted and not self._dialog_known(request):
                # A To tag is no credential: an untrusted source may only continue a call the
                # edge set up, or it could relay "re-INVITEs" to anyone without authenticating.
                if request.method == "ACK":
                    return Drop("unknown-dialog")
                return Reject(481, None, rule="unknown-dialog")
            return ACCEPT
        if verdict.kind is VerdictKind.DROP:
            return Drop(verdict.rule)
        return Reject(verdict.status, verdict.reason or None, verdict.retry_after, verdict.rule)

    def _dialog_known(self, request: Request) -> bool:
        """In-dialog requests need a dialog the edge saw set up: a call (the core's dialog
        tracker) or a subscription (SUBSCRIBE/REFER admitted from a trusted source or an
        authenticated subscriber, remembered here by Call-ID in a bounded table)."""
        if self.known_call is None:
            return True
        return self.known_call(request.call_id) or request.call_id in self._subscriptions

    def _registers_here(self, request: Request) -> bool:
        """A REGISTER from an untrusted source is for our registrar or for no one: one with a
        foreign Request-URI, or pre-loaded Routes to elsewhere, is not relayed."""
        is_local = self._is_local
        if is_local is None:
            return True
        try:
            routes = [r.uri for r in request.routes]
        except SipParseError:
            return False
        return is_local(request.uri) and all(is_local(u) for u in routes)

    def _subscribed(self, request: Request) -> None:
        if request.method in ("SUBSCRIBE", "REFER"):
            self._subscriptions.put(request.call_id, True)

    def _unauthenticated(self, request: Request, now: float) -> Verdict:
        """An untrusted request without credentials that the edge would only challenge (or
        refuse as a relay attempt) is answered here, statelessly: no transaction, no memory
        held for 32 s per request, the same answer whoever the target is."""
        if self._challenge is None or self._is_local is None:
            return ACCEPT
        if request.method not in AUTH_METHODS:
            return ACCEPT
        uri = request.uri
        if not (isinstance(uri, SipURI) and uri.user) and self._is_local(uri):
            return ACCEPT  # to the edge itself: OPTIONS pings, answered by the edge
        refusal = self.relay_refusal(
            request,
            ruri_local=self._is_local(request.uri),
            from_local=self._is_local(request.from_.uri),
            trusted=False,
            auth_on=True,
            authenticates=True,
        )
        if refusal is not None:
            return Reject(refusal[0], refusal[1], rule="not-relaying")
        return Reject(407, None, rule="challenge", headers=tuple(self._challenge(request, now)))

    # ---- Authenticator guard
    def checked(
        self,
        request: Request,
        source: Peer | None,
        outcome: Authenticated | AuthRefused,
        now: float,
    ) -> Authenticated | AuthRefused:
        """The scheme's verdict on ``request``'s credentials, after the lockout rules."""
        host = source.host if source is not None else _via_source(request)
        claimed = claimed_username(request)
        if isinstance(outcome, Authenticated):
            if self.admission.locked(outcome.username, host, now):
                self.admission.auth_failed(host, outcome.username, now)
                self._flush()
                return AuthRefused(403)  # what a wrong password gets
            self.admission.auth_succeeded(host, outcome.username, now, request.call_id)
            if request.to.tag is None:
                self._subscribed(request)
            if self._crosses_tenants(request, outcome.tenant):
                self._seq += 1
                self._emit(
                    SecurityAlert(ts=now, node=self._node, seq=self._seq, rule="cross-tenant",
                                  source=host, detail=request.method[:16])
                )  # fmt: skip
                return AuthRefused(403)
            return outcome
        if outcome.status == 403:
            self.admission.auth_failed(host, claimed, now)
            self._flush()
        return outcome

    # ---- relay policy
    @staticmethod
    def relay_refusal(
        request: Request,
        *,
        ruri_local: bool,
        from_local: bool,
        trusted: bool,
        auth_on: bool,
        authenticates: bool,
    ) -> tuple[int, str] | None:
        """``(403, "Not relaying")`` for an untrusted request aimed at a foreign domain that
        cannot turn out to be an authenticated local subscriber's: a method the edge does not
        authenticate, or neither a From in our domain nor credentials. ``auth_on`` False is
        the operator's explicit "no authorization" (lab use; ``callward edge`` warns)."""
        if trusted or ruri_local or not auth_on:
            return None
        credentialed = any(
            name in request.headers for name in ("Proxy-Authorization", "Authorization")
        )
        if authenticates and (from_local or credentialed):
            return None  # authentication decides (challenge, then only our subscribers pass)
        return 403, "Not relaying"

    # ---- toll fraud
    def call_attempt(
        self, account: str, tenant: str, request: Request, now: float, *, region: str | None = None
    ) -> tuple[int, str] | None:
        """``region`` (ISO 3166 alpha-2, the tenant's numbering region) sets what is national
        (its calling code is looked up once per region, not per call). Accounts are counted
        per tenant: the same username in two tenants is two accounts."""
        code = None
        if region:
            code = self._country_codes.get(region)
            if code is None and len(self._country_codes) < 512:
                code = str(phonenumbers.country_code_for_region(region) or "") or None
                self._country_codes[region] = code or ""
            code = code or None
        verdict = self.fraud.call_attempt(
            f"{tenant}/{account}",
            tenant,
            _target(request),
            request.call_id,
            now,
            country_code=code,
        )
        self._flush()
        if verdict.kind is VerdictKind.ADMIT:
            return None
        return verdict.status, verdict.reason

    def call_ended(self, call_id: str) -> None:
        self.fraud.call_ended(call_id)

    def _flush(self) -> None:
        for alert in (*self.admission.take_alerts(), *self.fraud.take_alerts()):
            self._emit(alert)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _via_source(request: Request) -> str:
    """Where the request came from, as the edge stamped it (§18.2.1 received)."""
    try:
        via = request.top_via
    except SipParseError:
        return ""
    return via.received or via.host
