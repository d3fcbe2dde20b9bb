"""Media anchoring through ng relays: the edge's :class:`~callward.edge.hooks.MediaAnchor`.

The edge behaves like Kamailio with its ``rtpengine`` module: an INVITE/UPDATE carrying an
offer becomes an ng ``offer`` to a relay and the relay's SDP replaces the body; the answer
(in the 18x/2xx, or in the ACK after a late offer) becomes an ng ``answer``; re-INVITEs and
UPDATEs (hold, handover, re-keying) are new offers to the *same* relay; and when the call ends
-- BYE, CANCEL, a failure response, session-timer expiry -- the ``ended`` hook sends
``delete``. The flags always ask for topology hiding: ``replace-origin``,
``replace-session-connection`` and ``ICE=remove``, so neither party sees the other's
addresses.

Sans-IO: relay commands are :class:`RelayCommand` questions (``edge/pending.py``) answered by
the adapter (``edge/relays.py``) with the reply dictionary. Choosing a relay is
:class:`RelayPool`: weighted random among the relays whose ``ping`` health check passes,
sticky per call; a relay that does not answer an initial offer is taken out of rotation and
the offer goes to another one.

Policy (:class:`AnchorPolicy`): ``always``, ``nat`` (only when the caller is behind a NAT:
the edge stamped ``received``/``rport`` on its Via, or its SDP advertises a private address
other than where it sent from) or ``never``, per route (longest prefix of the Request-URI
user) then per tenant (the From domain), else the default.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import ClassVar

from callward.edge.pending import Query, ask
from callward.errors import ConfigError, StoreError
from callward.ng.protocol import NgCommand, NgFlags, NgRequest
from callward.sip.message import Request, Response
from callward.sip.uri import SipURI

__all__ = [
    "ANCHOR_MODES",
    "AnchorPolicy",
    "RelayAnchor",
    "RelayCommand",
    "RelayPool",
    "RelayTarget",
    "parse_relay",
]

ANCHOR_MODES = ("always", "nat", "never")
TOPOLOGY_HIDING = NgFlags(replace_origin=True, replace_session_connection=True, ice="remove")


@dataclass(frozen=True, slots=True)
class RelayTarget:
    host: str
    port: int
    weight: int = 1

    @property
    def key(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_relay(text: str) -> RelayTarget:
    """``HOST:PORT`` or ``HOST:PORT weight=N`` (media.relays entries)."""
    addr, _, rest = text.strip().partition(" ")
    host, sep, port = addr.rpartition(":")
    weight = 1
    if rest.strip():
        key, eq, value = rest.strip().partition("=")
        if key != "weight" or not eq or not value.isdigit() or not 1 <= int(value) <= 1000:
            raise ConfigError(f"media.relays {text!r}: expected 'HOST:PORT [weight=1-1000]'")
        weight = int(value)
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"media.relays {text!r}: expected 'HOST:PORT [weight=1-1000]'")
    return RelayTarget(host.strip("[]"), int(port), weight)


@dataclass(frozen=True, slots=True)
class RelayCommand(Query):
    """Answer: the relay's reply dictionary. An exception answer means no reply."""

    timeout: ClassVar[float] = 3.0
    relay: RelayTarget
    request: NgRequest


class RelayPool:
    """Weighted choice among healthy relays; every command of a call goes to one relay."""

    def __init__(
        self,
        relays: list[RelayTarget],
        *,
        rng: random.Random | None = None,
        max_calls: int = 200_000,
    ) -> None:
        if not relays:
            raise ConfigError("media anchoring needs at least one relay")
        self.relays = list(relays)
        self.up: dict[str, bool] = {r.key: True for r in relays}
        self.rng = rng or random.Random()
        self.max_calls = max_calls
        self._calls: OrderedDict[str, RelayTarget] = OrderedDict()

    def mark(self, relay: RelayTarget, up: bool) -> None:
        self.up[relay.key] = up

    def healthy(self) -> list[RelayTarget]:
        return [r for r in self.relays if self.up.get(r.key, False)]

    def relay_of(self, call_id: str) -> RelayTarget | None:
        return self._calls.get(call_id)

    def pick(self, call_id: str, exclude: frozenset[str] = frozenset()) -> RelayTarget:
        candidates = [r for r in self.healthy() if r.key not in exclude]
        if not candidates:
            raise StoreError("no media relay is available")
        relay = self.rng.choices(candidates, weights=[r.weight for r in candidates])[0]
        self._calls[call_id] = relay
        while len(self._calls) > self.max_calls:
            self._calls.popitem(last=False)
        return relay

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    @property
    def calls(self) -> int:
        return len(self._calls)


@dataclass(frozen=True, slots=True)
class AnchorPolicy:
    default: str = "always"
    tenants: tuple[tuple[str, str], ...] = ()
    routes: tuple[tuple[str, str], ...] = ()  # Request-URI user prefix -> mode

    def __post_init__(self) -> None:
        for mode in (self.default, *(m for _, m in self.tenants), *(m for _, m in self.routes)):
            if mode not in ANCHOR_MODES:
                raise ConfigError(f"media anchor mode {mode!r}: expected always, nat or never")

    def mode_for(self, tenant: str, user: str) -> str:
        best = None
        for prefix, mode in self.routes:
            if user.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, mode)
        if best is not None:
            return best[1]
        return dict(self.tenants).get(tenant, self.default)


def _tenant_of(request: Request) -> str:
    uri = request.from_.uri
    return uri.host.lower() if isinstance(uri, SipURI) else "default"


def _private(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_private
    except ValueError:
        return False


def behind_nat(request: Request) -> bool:
    """RFC 3581: the edge stamped ``received`` (the source differs from the Via sent-by) or
    an ``rport`` other than the sent-by port; or the SDP's address is private and is not
    where the request came from."""
    via = request.top_via
    received = via.received
    if received is not None and received != via.host:
        return True
    rport = via.rport
    if rport and rport.isdigit() and via.port is not None and int(rport) != via.port:
        return True
    for line in request.body.decode("utf-8", "replace").splitlines():
        if line.startswith("c=IN IP"):
            host = line.split()[-1].split("/")[0]
            return _private(host) and host != (received or via.host)
    return False


def _is_sdp(msg: Request | Response) -> bool:
    ctype = (msg.content_type or "").split(";")[0].strip().lower()
    return bool(msg.body) and ctype == "application/sdp"


@dataclass(slots=True)
class _Call:
    relay: RelayTarget
    offer_from: str = ""  # tag of the party whose offer waits for an answer
    via_branch: str = ""


@dataclass
class RelayAnchor:
    """The :class:`~callward.edge.hooks.MediaAnchor` that drives ng relays."""

    pool: RelayPool
    policy: AnchorPolicy = field(default_factory=AnchorPolicy)
    tenant_of: Callable[[Request], str] = _tenant_of
    flags: NgFlags = TOPOLOGY_HIDING
    max_calls: int = 200_000
    calls: OrderedDict[str, _Call] = field(default_factory=OrderedDict)
    failovers: int = 0

    # -- the hook ---------------------------------------------------------------------------
    def request(self, request: Request, now: float) -> Generator[Query, object, Request]:
        method = request.method
        if method not in ("INVITE", "UPDATE", "ACK") or not _is_sdp(request):
            return request
        call_id = request.call_id
        call = self.calls.get(call_id)
        from_tag = request.from_.tag or ""
        to_tag = request.to.tag or ""
        if method == "ACK":  # the answer to a late offer (made in our 2xx)
            if call is None or not call.offer_from or call.offer_from == from_tag:
                return request
            sdp = yield from self._command(
                call_id, call, NgCommand.ANSWER, request, call.offer_from, from_tag
            )
            call.offer_from = ""
            return request.replace(body=sdp.encode())
        if call is None:
            if to_tag or not self._wanted(request):
                return request  # a call we do not anchor (or one we forgot)
            call = yield from self._open(request)
        sdp = yield from self._command(call_id, call, NgCommand.OFFER, request, from_tag, to_tag)
        call.offer_from = from_tag
        return request.replace(body=sdp.encode())

    def response(
        self, response: Response, request: Request, now: float
    ) -> Generator[Query, object, Response]:
        if request.method not in ("INVITE", "UPDATE") or not 100 < response.status < 300:
            return response
        call = self.calls.get(response.call_id)
        if call is None or not _is_sdp(response):
            return response
        from_tag = request.from_.tag or ""
        to_tag = response.to.tag or ""
        if call.offer_from == from_tag:  # the answer to the request's offer (18x or 2xx)
            sdp = yield from self._command(
                response.call_id, call, NgCommand.ANSWER, response, from_tag, to_tag
            )
            if response.status >= 200:
                call.offer_from = ""
        else:  # a late offer: the request had no SDP, the callee offers in its 2xx
            sdp = yield from self._command(
                response.call_id, call, NgCommand.OFFER, response, to_tag, from_tag
            )
            call.offer_from = to_tag
        return response.replace(body=sdp.encode())

    def ended(self, call_id: str, now: float) -> Generator[Query, object, None]:
        call = self.calls.pop(call_id, None)
        self.pool.forget(call_id)
        if call is None:
            return
        yield from ask(RelayCommand(call.relay, NgRequest(NgCommand.DELETE, call_id=call_id)), dict)

    # -- helpers --------------------------------------------------------------------------
    def _wanted(self, request: Request) -> bool:
        uri = request.uri
        user = uri.user or "" if isinstance(uri, SipURI) else ""
        mode = self.policy.mode_for(self.tenant_of(request), user)
        return mode == "always" or (mode == "nat" and behind_nat(request))

    def _open(self, request: Request) -> Generator[Query, object, _Call]:
        call = _Call(self.pool.pick(request.call_id), via_branch=request.top_via.branch or "")
        self.calls[request.call_id] = call
        while len(self.calls) > self.max_calls:
            old, _ = self.calls.popitem(last=False)
            self.pool.forget(old)
        return call
        yield  # a generator, for symmetry with the other steps

    def _command(
        self,
        call_id: str,
        call: _Call,
        command: NgCommand,
        msg: Request | Response,
        from_tag: str,
        to_tag: str,
    ) -> Generator[Query, object, str]:
        req = NgRequest(
            command,
            call_id=call_id,
            from_tag=from_tag,
            to_tag=to_tag,
            via_branch=call.via_branch,
            sdp=msg.body.decode("utf-8", "replace"),
            flags=self.flags,
        )
        tried: set[str] = set()
        while True:
            try:
                reply = yield from ask(RelayCommand(call.relay, req), dict)
                break
            except StoreError:
                # only a call's first offer may move to another relay: later commands need
                # the session that relay holds
                tried.add(call.relay.key)
                self.pool.mark(call.relay, False)
                if command is not NgCommand.OFFER or call.offer_from or len(tried) > 3:
                    raise
                call.relay = self.pool.pick(call_id, exclude=frozenset(tried))
                self.failovers += 1
        if reply.get("result") != "ok" or not isinstance(reply.get("sdp"), str):
            reason = reply.get("error-reason", "no SDP in the reply")
            raise StoreError(f"media relay refused {command.value}: {str(reason)[:80]}")
        sdp = reply["sdp"]
        assert isinstance(sdp, str)
        return sdp
