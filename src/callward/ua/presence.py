"""Presence and emergency numbers on the phone, against ``callward web``
(:mod:`callward.web.presence`), through the phone's one :class:`~callward.ua.cache.CoherentCache`.

* :class:`PresenceClient`: publish our status, choose whom we watch (matched contacts only),
  and keep the watched AORs' presence as one cache entry (``presence``) updated by *deltas*:
  ``GET ?since=<version>`` with ``If-None-Match``; nothing changed costs a bodiless 304. The
  cache's rules apply: presence is never shown stale past ``max_age`` during a partition (a
  stale "available" is worse than none), and after a heal or a handover it is revalidated
  before it is shown as fresh.
* :class:`EmergencyNumbers`: the numbers that are emergency calls and their route, kept for
  ever (usable with no network at all, ``emergency`` policy) and revalidated by ETag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from callward.errors import TransportError
from callward.ua.cache import CoherentCache, Freshness
from callward.ua.tokens import TokenSource

__all__ = ["EmergencyNumbers", "PresenceClient"]

PRESENCE_KEY = "presence"
EMERGENCY_KEY = "emergency"


class _Api:
    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        cache: CoherentCache,
        *,
        clock: Callable[[], float],
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.tokens = tokens
        self.cache = cache
        self._clock = clock
        self._http = http or httpx.AsyncClient(timeout=10.0, trust_env=False)
        self.bytes_in = 0  # response bodies received (what a metered link pays for)

    async def _send(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {**(headers or {}), "Authorization": await self.tokens.authorization(method)}
        try:
            resp = await self._http.request(method, self.base + path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            self.cache.link_down(self._clock())
            raise TransportError(f"{path}: {type(exc).__name__}") from None
        self.cache.link_up(self._clock())
        self.bytes_in += len(resp.content)
        return resp


class PresenceClient(_Api):
    PATH = "/api/v1/phone/presence"

    async def publish(self, status: str, note: str = "", expires: int = 3600) -> None:
        doc = {"status": status, "note": note, "expires": expires}
        resp = await self._send("PUT", self.PATH, json=doc)
        if resp.status_code != 204:
            raise TransportError(f"presence publish answered {resp.status_code}")

    async def watch(self, aors: list[str]) -> None:
        resp = await self._send("PUT", self.PATH + "/watch", json={"aors": aors})
        if resp.status_code != 200:
            raise TransportError(f"presence watch answered {resp.status_code}")
        # a new watch list: what we hold describes the old one, start again from 0
        self.cache.on_response(PRESENCE_KEY, 404, self._clock(), body=None, etag=None)

    async def refresh(self) -> str:
        """One conditional delta fetch; returns the entry's freshness afterwards."""
        entry = self.cache.entries.get(PRESENCE_KEY)
        since = int(entry.value.get("version", 0)) if entry is not None else 0
        resp = await self._send("GET", self.PATH, self.cache.conditional_headers(PRESENCE_KEY),
                                params={"since": since})  # fmt: skip
        now = self._clock()
        if resp.status_code == 200:
            body = resp.json()
            base = dict(entry.value.get("aors", {})) if entry is not None else {}
            if entry is not None and entry.value.get("watch") != body.get("watch"):
                base = {}
            for ch in body.get("changes", []):
                base[str(ch["aor"])] = {"status": ch["status"], "note": ch.get("note", "")}
            doc = {"version": body["version"], "watch": body.get("watch"), "aors": base}
            self.cache.on_response(PRESENCE_KEY, 200, now, body=doc,
                                   etag=resp.headers.get("ETag"))  # fmt: skip
        elif resp.status_code == 304:
            self.cache.on_response(PRESENCE_KEY, 304, now, body=None, etag=None)
        else:
            raise TransportError(f"presence answered {resp.status_code}")
        return self.cache.state(PRESENCE_KEY, now)

    def view(self) -> tuple[dict[str, dict[str, str]], str]:
        """Watched AORs' presence as the phone may show it now, and its freshness (nothing
        when the cache says the entry is unusable: cut off for longer than ``max_age``)."""
        value, state = self.cache.get(PRESENCE_KEY, self._clock())
        if value is None:
            return {}, state
        return dict(value.get("aors", {})), state


class EmergencyNumbers(_Api):
    PATH = "/api/v1/phone/emergency"

    async def refresh(self) -> str:
        resp = await self._send("GET", self.PATH, self.cache.conditional_headers(EMERGENCY_KEY))
        now = self._clock()
        if resp.status_code in (200, 304):
            self.cache.on_response(EMERGENCY_KEY, resp.status_code, now,
                                   body=resp.json() if resp.status_code == 200 else None,
                                   etag=resp.headers.get("ETag"))  # fmt: skip
        else:
            raise TransportError(f"emergency numbers answered {resp.status_code}")
        return self.cache.state(EMERGENCY_KEY, now)

    async def ensure(self) -> None:
        """Revalidate when the cache says so; a failure keeps what we hold (never dropped)."""
        if self.cache.state(EMERGENCY_KEY, self._clock()) != Freshness.FRESH:
            try:
                await self.refresh()
            except TransportError:
                pass

    def route_for(self, dialled: str) -> str | None:
        """The emergency route when ``dialled`` is an emergency number, else None. Works
        offline with whatever was last fetched, however old."""
        value, _ = self.cache.get(EMERGENCY_KEY, self._clock())
        if value is None:
            return None
        digits = "".join(c for c in dialled if c.isdigit() or c in "+*#")
        return str(value.get("route")) if digits in value.get("numbers", []) else None
