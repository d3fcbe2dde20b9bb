"""The phone's side of private contact discovery (:mod:`callward.ua.psi`) against
``callward web``: the sealed table is one entry of the phone's
:class:`~callward.ua.cache.CoherentCache` (downloaded once, then revalidated with
``If-None-Match``: a bodiless 304 while the directory is unchanged), and the OPRF exchange
sends only blinded points (≤ 500 per request) for contacts not evaluated before: the OPRF
values of earlier contacts are kept (:attr:`PsiDiscovery.values`; personal data: an app keeps
them in the keystore) and matched again against each new table, so a day costs a table
revalidation per sync plus the new contacts."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from callward.errors import AuthError, TransportError
from callward.ua.cache import CoherentCache, Freshness
from callward.ua.psi import MAX_POINTS, blind, match_table, unblind
from callward.ua.tokens import TokenSource

__all__ = ["PsiDiscovery"]

TABLE_KEY = "psi-table"


class PsiDiscovery:
    TABLE = "/api/v1/phone/contacts/psi-table"
    EVALUATE = "/api/v1/phone/contacts/psi"

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
        self._http = http or httpx.AsyncClient(timeout=20.0, trust_env=False)
        self.bytes_in = 0
        self.bytes_out = 0
        self.values: dict[str, tuple[str, bytes]] = {}  # contact id -> (number, F(number))
        self.evaluated = 0  # blinded points sent (what the daily limit counts)
        self.key_id = ""

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), "Authorization": await self.tokens.authorization()}
        try:
            resp = await self._http.request(method, self.base + path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            self.cache.link_down(self._clock())
            raise TransportError(f"{path}: {type(exc).__name__}") from None
        self.cache.link_up(self._clock())
        self.bytes_in += len(resp.content)
        self.bytes_out += len(resp.request.content)
        return resp

    async def table(self) -> dict[str, Any]:
        """The tenant's sealed table, revalidated when the cache says so."""
        now = self._clock()
        if self.cache.state(TABLE_KEY, now) != Freshness.FRESH:
            resp = await self._send("GET", self.TABLE,
                                    headers=self.cache.conditional_headers(TABLE_KEY))  # fmt: skip
            if resp.status_code not in (200, 304):
                raise TransportError(f"psi table answered {resp.status_code}")
            self.cache.on_response(TABLE_KEY, resp.status_code, self._clock(),
                                   body=resp.json() if resp.status_code == 200 else None,
                                   etag=resp.headers.get("ETag"))  # fmt: skip
        value, _ = self.cache.get(TABLE_KEY, self._clock())
        if value is None:
            raise TransportError("psi table unavailable")
        return value

    async def discover(self, contacts: Mapping[str, str]) -> dict[str, str]:
        """contact id -> AOR for the contacts (contact id -> E.164) that are subscribers."""
        doc = await self.table()
        table = {base64.b64decode(i): base64.b64decode(c) for i, c in doc["entries"]}
        if doc["key_id"] != self.key_id:  # a new server key: earlier values mean nothing
            self.values.clear()
            self.key_id = doc["key_id"]
        for cid in [c for c in self.values if contacts.get(c) != self.values[c][0]]:
            del self.values[cid]  # deleted or renumbered in the book: evaluate again
        ids = [c for c in contacts if c not in self.values]
        for start in range(0, len(ids), MAX_POINTS):
            chunk = {c: contacts[c] for c in ids[start : start + MAX_POINTS]}
            query, points = blind(chunk)
            self.evaluated += len(points)
            resp = await self._send("POST", self.EVALUATE, json={
                "key_id": doc["key_id"],
                "points": [base64.b64encode(p).decode() for p in points],
            })  # fmt: skip
            if resp.status_code == 409:  # the server's key changed: table first, then again
                self.cache.on_response(TABLE_KEY, 404, self._clock(), body=None, etag=None)
                raise AuthError("discovery key changed; call discover() again")
            if resp.status_code != 200:
                raise TransportError(f"psi evaluation answered {resp.status_code}")
            evaluated = [base64.b64decode(p) for p in resp.json()["evaluated"]]
            for cid, f in unblind(query, evaluated).items():
                self.values[cid] = (contacts[cid], f)
        return match_table({c: f for c, (_, f) in self.values.items() if c in contacts}, table)
