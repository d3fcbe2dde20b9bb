"""Drive the sans-IO edge core with no sockets: a fake clock, a message builder, and the
core's store questions answered from in-memory stores."""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field

import pytest

from callward.edge.answers import StoreAnswers
from callward.edge.location import MemoryLocation
from callward.edge.proxy import EdgeCore
from callward.edge.settings import EdgeSettings
from callward.edge.subscribers import SqliteSubscribers, Subscriber
from callward.sip import Request, Response, parse_message
from callward.sip.peer import Peer

EDGE = Peer("udp", "127.0.0.1", 5060)
EDGE_TCP = Peer("tcp", "127.0.0.1", 5060)
ALICE = Peer("udp", "127.0.0.1", 5091)
BOB = Peer("udp", "127.0.0.1", 5092)
SECRET = b"k" * 32
_branches = itertools.count(1)


def build(
    method: str,
    uri: str,
    *,
    src: Peer = ALICE,
    branch: str | None = None,
    from_: str = "<sip:alice@callward.local>",
    from_tag: str = "fa",
    to: str = "<sip:bob@callward.local>",
    to_tag: str | None = None,
    call_id: str = "call-1",
    cseq: int = 1,
    extra: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    max_forwards: int | None = 70,
    vias: tuple[str, ...] = (),
) -> bytes:
    br = branch or f"z9hG4bKt{next(_branches)}"
    lines = [f"{method} {uri} SIP/2.0"]
    lines.append(f"Via: SIP/2.0/{src.transport.upper()} {src.host}:{src.port};branch={br};rport")
    lines += [f"Via: {v}" for v in vias]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines.append(f"From: {from_};tag={from_tag}")
    lines.append(f"To: {to}" + (f";tag={to_tag}" if to_tag else ""))
    lines.append(f"Call-ID: {call_id}")
    lines.append(f"CSeq: {cseq} {method}")
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reply(req: Request, status: int, *, to_tag: str = "tb", extra=(), body: bytes = b"") -> bytes:
    """A downstream UA's response, built from the request it received (§8.2.6)."""
    lines = [f"SIP/2.0 {status} X"]
    for name, value in req.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route"):
            if name == "Record-Route" and not (100 < status < 300):
                continue
            lines.append(f"{name}: {value}")
        elif name == "To":
            tag = "" if ";tag=" in value or status == 100 else f";tag={to_tag}"
            lines.append(f"To: {value}{tag}")
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _parse(data: bytes) -> Request | Response:
    """Strict parse; lenient only for our 400s that must echo a peer's malformed header."""
    try:
        return parse_message(data)
    except Exception:
        return parse_message(data, strict=False)


_STORES: weakref.WeakKeyDictionary[EdgeCore, StoreAnswers] = weakref.WeakKeyDictionary()


@dataclass
class Net:
    core: EdgeCore
    now: float = 1_000_000.0
    log: list[tuple[Peer, Request | Response]] = field(default_factory=list)
    events: list = field(default_factory=list)
    asked: list = field(default_factory=list)
    waiting: list = field(default_factory=list)  # questions the stores do not answer (hooks)

    @property
    def location(self) -> MemoryLocation:
        return _STORES[self.core].location

    def send(self, data: bytes, src: Peer = ALICE) -> list[tuple[Peer, Request | Response]]:
        self.core.receive_datagram(data, src, self.now)
        return self._drain()

    def answer(self, pending, result) -> list[tuple[Peer, Request | Response]]:
        """Answer a question left in ``waiting`` (as an adapter would, later)."""
        self.waiting.remove(pending)
        self.core.resolve(pending.id, result, self.now)
        return self._drain()

    def tick(self, seconds: float) -> list[tuple[Peer, Request | Response]]:
        end = self.now + seconds
        out: list[tuple[Peer, Request | Response]] = []
        while True:
            nxt = self.core.get_timer()
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            self.core.handle_timer(self.now)
            out += self._drain()
        self.now = end
        return out

    def _drain(self) -> list[tuple[Peer, Request | Response]]:
        answers = _STORES.get(self.core)
        while (pending := self.core.next_request()) is not None:
            self.asked.append(pending.query)
            if answers is not None and answers.handles(pending.query):
                self.core.resolve(pending.id, answers.answer(pending.query, self.now), self.now)
            else:
                self.waiting.append(pending)
        out = self.core.datagrams_to_send()
        while (ev := self.core.next_event()) is not None:
            self.events.append(ev)
        msgs = [(p, _parse(d)) for p, d in out]
        self.log += msgs
        return msgs


def responses(msgs, status: int | None = None) -> list[Response]:
    return [
        m for _, m in msgs if isinstance(m, Response) and (status is None or m.status == status)
    ]


def requests(msgs, method: str | None = None) -> list[tuple[Peer, Request]]:
    return [
        (p, m) for p, m in msgs if isinstance(m, Request) and (method is None or m.method == method)
    ]


def make_core(**kw) -> tuple[EdgeCore, MemoryLocation, SqliteSubscribers]:
    loc = MemoryLocation()
    subs = SqliteSubscribers(":memory:")
    subs.put(Subscriber.from_password("alice", "callward.local", "secret-a"))
    subs.put(Subscriber.from_password("bob", "callward.local", "secret-b"))
    defaults = dict(
        listen=(EDGE, EDGE_TCP),
        realm="callward.local",
        domains=("callward.local",),
        auth=False,
        algorithms=("MD5", "SHA-256"),
        t1=0.5,
        blacklist_seconds=30.0,
    )
    defaults.update(kw)
    settings = EdgeSettings(**defaults)
    core = EdgeCore(settings, secret=SECRET)
    _STORES[core] = StoreAnswers(loc, subs)
    return core, loc, subs


@pytest.fixture
def net() -> Net:
    core, _, _ = make_core()
    return Net(core)


@pytest.fixture
def h():
    """The helpers above as one namespace (importlib import mode cannot import conftest)."""
    import types

    return types.SimpleNamespace(
        build=build,
        reply=reply,
        Net=Net,
        make_core=make_core,
        responses=responses,
        requests=requests,
        EDGE=EDGE,
        EDGE_TCP=EDGE_TCP,
        ALICE=ALICE,
        BOB=BOB,
        SECRET=SECRET,
    )
