"""Registrar (RFC 3261 §10.3) with RFC 5626 outbound bindings. Sans-IO: a REGISTER and its
source address in, a response and registration events out; the location service and the
subscriber store are asked through queries (:mod:`callward.edge.pending`), never called.

Bindings are keyed by ``+sip.instance``/``reg-id`` when the phone supports outbound (so a phone
that changes IP replaces its own binding instead of piling up stale ones, RFC 5626 §6), else by
the Contact URI. Every binding records the flow it arrived on, which the proxy uses to reach a
phone behind NAT over the same connection.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

from callward.edge.auth import Authenticator
from callward.edge.location import Binding
from callward.edge.pending import LocationUpdate, Query, bindings_of
from callward.errors import SipParseError
from callward.sip.headers import NameAddr
from callward.sip.message import Request, Response, make_response
from callward.sip.peer import Peer
from callward.sip.uri import SipURI

__all__ = ["Registrar", "RegistrarPolicy", "RegistrarResult", "aor_of"]


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    realm: str = "callward.local"
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    auth: bool = True
    algorithms: tuple[str, ...] = ("MD5",)
    node: str = "edge-1"
    node_uri: str = ""


@dataclass(frozen=True, slots=True)
class RegistrarResult:
    response: Response
    aor: str = ""
    contact_count: int = 0
    expires: int = 0
    reason: str = ""  # "registered" | "refreshed" | "unregistered" | "" (no change)
    tenant: str = "default"
    changed: bool = False
    auth_failed: bool = False


def aor_of(uri: SipURI) -> str:
    """Canonical address-of-record: user@host, host lower-cased (§10.3 step 5)."""
    user = uri.user_unescaped or ""
    return f"{user}@{uri.host.lower()}"


def _strip_param(na: NameAddr, name: str) -> NameAddr:
    return NameAddr(na.uri, na.display, tuple(p for p in na.params if p[0].lower() != name), True)


@dataclass
class Registrar:
    authenticator: Authenticator
    policy: RegistrarPolicy = field(default_factory=RegistrarPolicy)

    def handle(
        self, req: Request, source: Peer, now: float, *, first_hop: bool
    ) -> Generator[Query, object, RegistrarResult]:
        """Process one REGISTER whose Request-URI names one of our domains."""
        p = self.policy
        try:
            to_uri = req.to.sip_uri
            contacts = req.contacts
            star = req.contact_star
            header_expires = req.expires
        except SipParseError as exc:
            return RegistrarResult(make_response(req, 400, _reason(str(exc)), to_tag="cw-reg"))
        if to_uri.user is None:
            return RegistrarResult(make_response(req, 404, "No User In To", to_tag="cw-reg"))
        aor = aor_of(to_uri)
        tenant = "default"
        if p.auth:
            who = yield from self.authenticator.authenticate(
                req, now, proxy=False, username=to_uri.user_unescaped
            )
            if isinstance(who, Response):
                return RegistrarResult(who, aor=aor, auth_failed=who.status == 403)
            tenant = who.tenant
        existing = {b.key: b for b in (yield from bindings_of(aor))}
        call_id = req.call_id
        cseq = req.cseq.seq
        if star:
            # §10.3 step 6: "*" only alone and only with Expires: 0.
            if contacts or header_expires != 0:
                return RegistrarResult(
                    make_response(req, 400, "Invalid Contact *", to_tag="cw-reg"), aor=aor
                )
            for b in existing.values():
                if b.call_id == call_id and cseq <= b.cseq:
                    return RegistrarResult(
                        make_response(req, 500, "Out Of Order CSeq", to_tag="cw-reg"), aor=aor
                    )
            yield LocationUpdate(aor, remove_all=True)
            return self._ok(req, aor, [], now, "unregistered", tenant, bool(existing))
        outbound_ok = first_hop and "outbound" in _tokens(req, "Supported")
        changes: list[tuple[str, Binding | None]] = []
        for na in contacts:
            expires = header_expires
            pv = na.param("expires")
            if pv is not None:
                expires = int(pv) if pv.isdigit() else p.default_expires
            if expires is None:
                expires = p.default_expires
            if 0 < expires < p.min_expires:
                # §10.3 step 7: too brief → 423 with our minimum.
                return RegistrarResult(
                    make_response(
                        req, 423, to_tag="cw-reg", extra=[("Min-Expires", str(p.min_expires))]
                    ),
                    aor=aor,
                )
            expires = min(expires, p.max_expires)
            instance = na.param("+sip.instance")
            reg_id = na.param("reg-id")
            outbound = bool(outbound_ok and instance and reg_id)
            contact_na = _strip_param(na, "expires")
            uri_text = str(na.uri)
            key = f"{instance}|{reg_id}" if outbound else uri_text
            old = existing.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return RegistrarResult(
                    make_response(req, 500, "Out Of Order CSeq", to_tag="cw-reg"), aor=aor
                )
            if expires == 0:
                changes.append((key, None))
                continue
            nat = False
            if isinstance(na.uri, SipURI):
                cport = na.uri.port or 5060
                nat = (na.uri.host, cport) != (source.host, source.port)
            q_text = na.param("q")
            try:
                q = float(q_text) if q_text else 1.0
            except ValueError:
                q = 1.0
            changes.append(
                (
                    key,
                    Binding(
                        aor=aor,
                        contact=str(contact_na),
                        key=key,
                        expires_at=now + expires,
                        call_id=call_id,
                        cseq=cseq,
                        source=str(source),
                        conn=source.conn,
                        node=p.node,
                        node_uri=p.node_uri,
                        q=q,
                        outbound=outbound,
                        nat=nat,
                    ),
                )
            )
        if not contacts:
            # A query (§10.3 step 8 with no Contact): list the bindings.
            return self._ok(req, aor, list(existing.values()), now, "", tenant, False)
        reason = "refreshed"
        saved: list[Binding] = []
        removed: list[str] = []
        for key, binding in changes:
            if binding is None:
                if key in existing:
                    removed.append(key)
                    existing.pop(key)
                    reason = "unregistered"
            else:
                if key not in existing:
                    reason = "registered"
                saved.append(binding)
                existing[key] = binding
        yield LocationUpdate(aor, save=tuple(saved), remove=tuple(removed))
        if existing and reason == "unregistered":
            reason = "refreshed"
        outbound_used = any(b is not None and b.outbound for _, b in changes)
        return self._ok(
            req, aor, list(existing.values()), now, reason, tenant, True, outbound=outbound_used
        )

    def _ok(
        self,
        req: Request,
        aor: str,
        bindings: list[Binding],
        now: float,
        reason: str,
        tenant: str,
        changed: bool,
        *,
        outbound: bool = False,
    ) -> RegistrarResult:
        extra = [("Contact", f"{b.contact};expires={b.remaining(now)}") for b in bindings]
        if outbound:
            extra.append(("Require", "outbound"))  # RFC 5626 §6
        resp = make_response(req, 200, to_tag="cw-reg", extra=extra)
        expires = max((b.remaining(now) for b in bindings), default=0)
        return RegistrarResult(
            resp,
            aor=aor,
            contact_count=len(bindings),
            expires=expires,
            reason=reason,
            tenant=tenant,
            changed=changed,
        )


def _tokens(req: Request, name: str) -> set[str]:
    return {v.strip().lower() for v in req.headers.values(name)}


def _reason(text: str) -> str:
    """A reason phrase is one line of printable text (§25.1 Reason-Phrase)."""
    clean = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    return ("Bad Request: " + clean)[:180]
