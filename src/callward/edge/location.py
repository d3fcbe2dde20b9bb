"""Location service: address-of-record → contact bindings (RFC 3261 §10.3).

In-memory by default; Redis when several edge nodes share registrations. Each binding remembers
which node received it and over which flow (RFC 5626), so node B can reach a phone whose
connection terminates on node A by routing through A with a flow token.

Times are absolute wall-clock seconds (the nodes share them through Redis).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from callward.errors import StoreError

__all__ = ["Binding", "LocationStore", "MemoryLocation", "RedisLocation", "open_location"]


@dataclass(frozen=True, slots=True)
class Binding:
    aor: str  # "user@domain", lower-cased domain
    contact: str  # the Contact URI as the phone sent it
    key: str  # binding identity: "+sip.instance|reg-id" (RFC 5626) or the contact URI
    expires_at: float
    call_id: str
    cseq: int
    source: str  # str(Peer) the REGISTER came from (received/rport, §18.2.1 / RFC 3581)
    conn: str = ""  # connection id on ``node`` (stream transports)
    node: str = ""  # node id holding the flow
    node_uri: str = ""  # how other nodes reach that node, e.g. "sip:127.0.0.1:5060"
    q: float = 1.0
    outbound: bool = False  # registered with +sip.instance and reg-id (RFC 5626 §6)
    nat: bool = False  # contact address differs from the source address

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


class LocationStore(Protocol):
    def lookup(self, aor: str, now: float) -> list[Binding]: ...

    def save(self, binding: Binding) -> None: ...

    def remove(self, aor: str, key: str) -> None: ...

    def remove_all(self, aor: str) -> None: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


class MemoryLocation:
    """Embedded default: a dict of dicts. Expired bindings are dropped lazily on lookup."""

    def __init__(self) -> None:
        self._aors: dict[str, dict[str, Binding]] = {}

    def lookup(self, aor: str, now: float) -> list[Binding]:
        table = self._aors.get(aor)
        if not table:
            return []
        live = [b for b in table.values() if b.expires_at > now]
        if len(live) != len(table):
            for b in list(table.values()):
                if b.expires_at <= now:
                    del table[b.key]
            if not table:
                del self._aors[aor]
        return live

    def save(self, binding: Binding) -> None:
        self._aors.setdefault(binding.aor, {})[binding.key] = binding

    def remove(self, aor: str, key: str) -> None:
        table = self._aors.get(aor)
        if table is not None:
            table.pop(key, None)
            if not table:
                del self._aors[aor]

    def remove_all(self, aor: str) -> None:
        self._aors.pop(aor, None)

    def count(self) -> int:
        return sum(len(t) for t in self._aors.values())

    def close(self) -> None:
        self._aors.clear()


class RedisLocation:
    """One Redis hash per AOR (``<prefix>:loc:<aor>``, field = binding key, value = JSON).

    The hash's TTL follows its longest binding so Redis itself forgets dead registrations even
    when no node is left to clean up; lookups also filter by ``expires_at``."""

    def __init__(self, url: str, prefix: str = "callward", client: Any = None) -> None:
        import redis

        self._prefix = prefix
        try:
            self._r = client if client is not None else redis.Redis.from_url(url, socket_timeout=2)
            self._r.ping()
        except redis.RedisError as exc:
            raise StoreError(f"location store: {exc}") from None

    def _key(self, aor: str) -> str:
        return f"{self._prefix}:loc:{aor}"

    def lookup(self, aor: str, now: float) -> list[Binding]:
        import redis

        try:
            raw = self._r.hgetall(self._key(aor))
        except redis.RedisError as exc:
            raise StoreError(f"location lookup: {exc}") from None
        out: list[Binding] = []
        dead: list[Any] = []
        for field, value in raw.items():
            try:
                b = Binding(**json.loads(value))
            except (ValueError, TypeError):
                dead.append(field)
                continue
            if b.expires_at > now:
                out.append(b)
            else:
                dead.append(field)
        if dead:
            self._r.hdel(self._key(aor), *dead)
        return out

    def save(self, binding: Binding) -> None:
        import redis

        key = self._key(binding.aor)
        try:
            pipe = self._r.pipeline()
            pipe.hset(key, binding.key, json.dumps(asdict(binding), separators=(",", ":")))
            pipe.expireat(key, int(binding.expires_at) + 1, gt=True)
            pipe.expireat(key, int(binding.expires_at) + 1, nx=True)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"location save: {exc}") from None

    def remove(self, aor: str, key: str) -> None:
        self._r.hdel(self._key(aor), key)

    def remove_all(self, aor: str) -> None:
        self._r.delete(self._key(aor))

    def count(self) -> int:
        return sum(self._r.hlen(k) for k in self._r.scan_iter(f"{self._prefix}:loc:*"))

    def clear(self) -> None:
        """Delete every key under the prefix (tests)."""
        keys = list(self._r.scan_iter(f"{self._prefix}:*"))
        if keys:
            self._r.delete(*keys)

    def close(self) -> None:
        self._r.close()


def open_location(spec: str, prefix: str = "callward") -> LocationStore:
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisLocation(spec, prefix)
    if spec in ("", "memory"):
        return MemoryLocation()
    raise StoreError(f"unknown location store {spec!r} (expected 'memory' or a redis:// URL)")
