"""Device-side caches kept coherent with the central store by version (ETag), across partitions.
Sans-IO: the adapter does the HTTP; the cache decides what may be shown and what to ask.

Every entry remembers its ETag, when it was last validated, and the *link epoch* it was
validated in. The rules:

* **Fresh** while younger than ``max_age`` and validated in the current epoch: served as is.
* **Partition** (:meth:`CoherentCache.link_down`): entries stay usable for ``stale_if_error``
  seconds past ``max_age`` (RFC 5861 §4 semantics), flagged stale; after that they are
  unusable. Presence uses 0 (a stale "online" is worse than none); emergency routes use
  infinity (never drop an emergency route because the radio is down).
* **Heal** (:meth:`CoherentCache.link_up`): the epoch moves on, so *every* entry validated
  before or during the partition must be revalidated (conditional GET with ``If-None-Match``)
  before it is fresh again, whatever its age: changes made elsewhere during the partition are
  never masked by a young-looking entry.
* **Writes** (preferences): local edits are kept as a per-field overlay over the last server
  document (the *base*) and sent with ``If-Match: <base ETag>``. On 412 the cache merges by
  these documented rules: fields changed only locally keep the local value; fields changed only
  on the server take the server value; a field changed on both sides takes the **server's**
  value (the other device's write was accepted first) and is reported in
  :attr:`CoherentCache.conflicts`. Then the write is retried against the new ETag.
* **Device-local entries** (DNS answers, the STUN mapped address, the last good ICE pair):
  learned by the phone itself, not from the central store, so they carry a TTL instead of an
  ETag (:meth:`CoherentCache.put_local`). They are kept per *network* (the key names the
  network's keyed digest, :class:`~callward.nat.network_cache.NetworkKey`), so what was learned
  on the office Wi-Fi is never used on cellular and is found again back at the office. Past
  their TTL they are gone while the link is up; during a partition they are served stale for
  the kind's ``stale_if_error`` (RFC 8767 serve-stale for DNS: one hour).
* **Network change** (:meth:`CoherentCache.network_changed`, a handover): like a heal, the
  epoch moves on (server entries are revalidated on the new path), and the current network is
  what device-local lookups are keyed by from then on.
* The cache is bounded (``max_entries``, least recently used out) and round-trips through
  :meth:`CoherentCache.snapshot` / :meth:`CoherentCache.restore` (the phone keeps it in its
  encrypted keystore; times are on the wall clock the caller injects).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from callward.errors import TransportError
from callward.ua.tokens import TokenSource

__all__ = ["CachePolicy", "CoherentCache", "Entry", "Freshness", "PrefsClient"]

PRESENCE = "presence"
EMERGENCY = "emergency"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    max_age: float
    stale_if_error: float = 0.0


POLICIES = {
    "prefs": CachePolicy(max_age=3600.0, stale_if_error=7 * 86400.0),
    PRESENCE: CachePolicy(max_age=30.0, stale_if_error=0.0),
    "dns": CachePolicy(max_age=300.0, stale_if_error=3600.0),  # RFC 8767 serve-stale
    EMERGENCY: CachePolicy(max_age=86400.0, stale_if_error=math.inf),
    # device-local (TTL from the source; max_age caps it): a NAT mapping may change at any
    # time, so a stale mapped address is only a hint; an ICE pair likewise.
    "stun": CachePolicy(max_age=600.0, stale_if_error=0.0),
    "ice": CachePolicy(max_age=7 * 86400.0, stale_if_error=0.0),
}


class Freshness:
    FRESH = "fresh"
    STALE = "stale"  # usable, flagged (partitioned, within stale_if_error)
    REVALIDATE = "revalidate"  # ask the server (If-None-Match) before use
    UNUSABLE = "unusable"


@dataclass
class Entry:
    value: dict[str, Any]
    etag: str  # "" for a device-local entry
    validated_at: float
    epoch: int
    policy: CachePolicy
    edits: dict[str, Any] = field(default_factory=dict)  # local overlay, not yet accepted
    ttl: float | None = None  # device-local entries: seconds from validated_at


class CoherentCache:
    def __init__(
        self, policies: dict[str, CachePolicy] | None = None, *, max_entries: int = 4096
    ) -> None:
        self.policies = policies or POLICIES
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.epoch = 0
        self.online = True
        self.network = ""  # keyed digest of the network we are on ("" = not known)
        self.max_entries = max_entries
        self.conflicts: list[tuple[str, str]] = []  # (key, field) where the server won
        self.hits = 0
        self.misses = 0

    def _policy(self, key: str) -> CachePolicy:
        return self.policies.get(key.split(":", 1)[0], self.policies["prefs"])

    # ---- the link
    def link_down(self, now: float) -> None:
        self.online = False

    def link_up(self, now: float) -> None:
        if not self.online:
            self.epoch += 1  # everything validated before the heal must be checked again
        self.online = True

    def network_changed(self, network: str, now: float) -> None:
        """A handover to ``network`` (a keyed digest, never an address or SSID): server
        entries are revalidated on the new path, device-local lookups use its keys."""
        if network != self.network:
            self.network = network
            self.epoch += 1
        self.online = True

    # ---- device-local entries (DNS, STUN, ICE): a TTL, no ETag
    def local_key(self, kind: str, name: str) -> str:
        return f"{kind}:{self.network}:{name}"

    def put_local(self, kind: str, name: str, value: dict[str, Any], now: float,
                  ttl: float) -> None:  # fmt: skip
        """Remember ``value`` learned on the current network for ``ttl`` seconds (capped by
        the kind's ``max_age``; a TTL of 0 is not cached, RFC 1035 §3.2.1)."""
        policy = self._policy(kind)
        ttl = min(ttl, policy.max_age)
        if ttl <= 0:
            return
        key = self.local_key(kind, name)
        self.entries[key] = Entry(dict(value), "", now, self.epoch, policy, ttl=ttl)
        self.entries.move_to_end(key)
        self._bound()

    def get_local(self, kind: str, name: str, now: float) -> dict[str, Any] | None:
        """The value learned on *this* network if alive (or, cut off, within
        ``stale_if_error`` past its TTL); else None."""
        key = self.local_key(kind, name)
        e = self.entries.get(key)
        if e is None or e.ttl is None:
            self.misses += 1
            return None
        age = now - e.validated_at
        if age < 0:  # learned "in the future": the clock went back (a reboot): not trusted
            del self.entries[key]
            self.misses += 1
            return None
        limit = e.ttl + (0.0 if self.online else e.policy.stale_if_error)
        if age >= limit:
            if age >= e.ttl + e.policy.stale_if_error:
                del self.entries[key]  # useless even in a partition
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return e.value

    def forget_local(self, kind: str, name: str) -> None:
        self.entries.pop(self.local_key(kind, name), None)

    def _bound(self) -> None:
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    # ---- persistence (the phone's encrypted keystore)
    def snapshot(self) -> dict[str, Any]:
        return {"v": 1, "network": self.network, "entries": [
            [k, e.value, e.etag, e.validated_at, e.edits, e.ttl] for k, e in self.entries.items()
        ]}  # fmt: skip

    def restore(self, data: Any) -> None:
        """Entries of an earlier run. They come back in an *older* epoch: server entries are
        revalidated before use; device-local ones keep their TTL. Bad data is ignored."""
        if not isinstance(data, dict) or data.get("v") != 1:
            return
        self.network = str(data.get("network", ""))[:64]
        old = self.epoch - 1
        for item in data.get("entries", [])[: self.max_entries]:
            try:
                key, value, etag, at, edits, ttl = item
                entry = Entry(dict(value), str(etag), float(at), old, self._policy(str(key)),
                              dict(edits), None if ttl is None else float(ttl))  # fmt: skip
            except (TypeError, ValueError):
                continue
            self.entries[str(key)] = entry

    # ---- reads
    def state(self, key: str, now: float) -> str:
        e = self.entries.get(key)
        if e is None:
            return Freshness.REVALIDATE if self.online else Freshness.UNUSABLE
        age = now - e.validated_at
        if self.online:
            if e.epoch == self.epoch and age < e.policy.max_age:
                return Freshness.FRESH
            return Freshness.REVALIDATE
        return (
            Freshness.STALE
            if age < e.policy.max_age + e.policy.stale_if_error
            else (Freshness.UNUSABLE)
        )

    def get(self, key: str, now: float) -> tuple[dict[str, Any] | None, str]:
        """The value to show (with local edits applied) and its freshness."""
        st = self.state(key, now)
        e = self.entries.get(key)
        if e is None or st == Freshness.UNUSABLE:
            return None, st
        return {**e.value, **e.edits}, st

    def conditional_headers(self, key: str) -> dict[str, str]:
        e = self.entries.get(key)
        return {"If-None-Match": e.etag} if e is not None else {}

    def on_response(
        self, key: str, status: int, now: float, *, body: dict[str, Any] | None, etag: str | None
    ) -> None:
        """The answer to a (conditional) GET: 200 replaces, 304 revalidates, 404 forgets."""
        e = self.entries.get(key)
        if status == 304 and e is not None:
            e.validated_at, e.epoch = now, self.epoch
        elif status == 200 and body is not None and etag is not None:
            edits = e.edits if e is not None else {}
            base = e.value if e is not None else {}
            self.entries[key] = Entry(dict(body), etag, now, self.epoch, self._policy(key))
            self._rebase(key, base, edits)
            self._bound()
        elif status == 404:
            self.entries.pop(key, None)

    # ---- writes
    def edit(self, key: str, name: str, value: Any) -> None:
        e = self.entries.get(key)
        if e is None:
            raise KeyError(f"{key}: fetch it before editing")
        e.edits[name] = value

    def pending_write(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The document to PUT with ``If-Match``, or None when there is nothing to write."""
        e = self.entries.get(key)
        if e is None or not e.edits:
            return None
        return {**e.value, **e.edits}, e.etag

    def write_done(
        self, key: str, status: int, now: float, *, etag: str | None, current: dict[str, Any] | None
    ) -> None:
        """204: the write is the new base. 412: ``current`` is the server's document (ETag
        ``etag``); merge by the module's rules, the retry goes out with the new ETag."""
        e = self.entries[key]
        if status in (200, 204) and etag is not None:
            e.value, e.etag, e.edits = {**e.value, **e.edits}, etag, {}
            e.validated_at, e.epoch = now, self.epoch
        elif status == 412 and current is not None and etag is not None:
            base, edits = e.value, e.edits
            self.entries[key] = Entry(dict(current), etag, now, self.epoch, e.policy)
            self._rebase(key, base, edits)

    def _rebase(self, key: str, base: dict[str, Any], edits: dict[str, Any]) -> None:
        e = self.entries[key]
        kept: dict[str, Any] = {}
        for name, value in edits.items():
            if e.value.get(name) != base.get(name):  # the server changed it too: server wins
                if e.value.get(name) != value:
                    self.conflicts.append((key, name))
                continue
            kept[name] = value
        e.edits = kept


class PrefsClient:
    """The asyncio/httpx adapter for the ``prefs`` entry against ``callward web``
    (``/api/v1/phone/prefs``, conditional GET and PUT)."""

    KEY = "prefs"
    PATH = "/api/v1/phone/prefs"

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        cache: CoherentCache,
        *,
        clock: Callable[[], float],
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + self.PATH
        self.tokens = tokens
        self.cache = cache
        self._clock = clock
        self._http = http or httpx.AsyncClient(timeout=10.0, trust_env=False)

    async def _send(
        self, method: str, headers: dict[str, str], body: bytes = b""
    ) -> httpx.Response:
        headers = {**headers, "Authorization": await self.tokens.authorization(method)}
        try:
            return await self._http.request(method, self.url, headers=headers, content=body or None)
        except httpx.HTTPError as exc:
            self.cache.link_down(self._clock())
            raise TransportError(f"prefs: {type(exc).__name__}") from None

    async def revalidate(self) -> str:
        """Conditional GET; returns the entry's freshness afterwards."""
        resp = await self._send("GET", self.cache.conditional_headers(self.KEY))
        self.cache.link_up(self._clock())
        body = resp.json() if resp.status_code == 200 else None
        self.cache.on_response(self.KEY, resp.status_code, self._clock(), body=body,
                               etag=resp.headers.get("ETag"))  # fmt: skip
        return self.cache.state(self.KEY, self._clock())

    async def push(self) -> bool:
        """Send local edits (If-Match); on 412 merge and retry once. True when accepted."""
        for _ in range(2):
            todo = self.cache.pending_write(self.KEY)
            if todo is None:
                return True
            doc, etag = todo
            resp = await self._send("PUT", {"If-Match": etag, "Content-Type": "application/json"},
                                    json.dumps(doc).encode())  # fmt: skip
            current = resp.json() if resp.status_code == 412 else None
            self.cache.write_done(self.KEY, resp.status_code, self._clock(),
                                  etag=resp.headers.get("ETag"), current=current)  # fmt: skip
        return self.cache.pending_write(self.KEY) is None
