"""Contact discovery from the phone: delta sync of truncated salted hashes, never the address book.

:class:`ContactSync` (sans-IO) decides what to send: for every contact number not yet sent
under the current salt, :func:`callward.privacy.discovery.discovery_hash`; nothing else (no
names, no numbers, nothing for contacts already sent). The server answers the matches and the
AORs that changed since the directory version the phone last saw (``since``); contacts that
pointed to a changed AOR are forgotten and looked up again on the next sync. A salt change
(HTTP 409) is the one event that makes the phone send hashes of its whole book again.

:class:`SyncClient` is the asyncio/httpx adapter (Bearer token from the
:class:`~callward.ua.tokens.TokenSource`); its state is kept in the device keystore because
it is personal data (which contact is reachable at which AOR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from callward.errors import AuthError, TransportError
from callward.privacy.discovery import discovery_hash, is_e164
from callward.ua.keystore import Keystore
from callward.ua.tokens import TokenSource

__all__ = ["ContactSync", "SyncClient", "SyncPlan"]

MAX_ADDED_PER_REQUEST = 500
KEYSTORE_RECORD = "contact-sync"


@dataclass(frozen=True, slots=True)
class SyncPlan:
    since: int
    added: tuple[str, ...]
    contacts: Mapping[str, str]  # prefix -> contact id (stays on the phone)


@dataclass
class ContactSync:
    salt: bytes = b""
    salt_id: str = ""
    version: int = 0
    sent: dict[str, str] = field(default_factory=dict)  # contact id -> prefix sent
    matches: dict[str, str] = field(default_factory=dict)  # contact id -> AOR

    def set_salt(self, salt: bytes, salt_id: str) -> None:
        if salt_id != self.salt_id:  # new salt: earlier hashes mean nothing any more
            self.salt, self.salt_id = salt, salt_id
            self.sent.clear()
            self.matches.clear()
            self.version = 0

    def plan(self, contacts: Mapping[str, str]) -> SyncPlan:
        """What to send for ``contacts`` (contact id -> E.164 number)."""
        for cid in [c for c in self.sent if c not in contacts]:  # deleted locally: forget
            del self.sent[cid]
            self.matches.pop(cid, None)
        todo: dict[str, str] = {}
        for cid, number in contacts.items():
            if not is_e164(number):
                continue
            prefix = discovery_hash(self.salt, number)
            if self.sent.get(cid) != prefix:  # new contact or its number changed
                todo[prefix] = cid
                if len(todo) >= MAX_ADDED_PER_REQUEST:
                    break
        return SyncPlan(self.version, tuple(sorted(todo)), todo)

    def apply(self, plan: SyncPlan, answer: Mapping[str, Any]) -> None:
        for prefix, cid in plan.contacts.items():
            self.sent[cid] = prefix
            self.matches.pop(cid, None)
        for m in answer.get("matches", ()):
            found = plan.contacts.get(str(m.get("h")))
            if found is not None:
                self.matches[found] = str(m.get("aor"))[:255]
        gone = {str(a) for a in answer.get("gone", ())}
        for cid, aor in list(self.matches.items()):
            if aor in gone and cid not in plan.contacts.values():
                del self.matches[cid]
                self.sent.pop(cid, None)  # look it up again next time
        version = answer.get("version")
        if isinstance(version, int) and version >= 0:
            self.version = version

    def snapshot(self) -> dict[str, Any]:
        return {"salt": self.salt.hex(), "salt_id": self.salt_id, "version": self.version,
                "sent": self.sent, "matches": self.matches}  # fmt: skip

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> ContactSync:
        return cls(bytes.fromhex(str(data.get("salt", ""))), str(data.get("salt_id", "")),
                   int(data.get("version", 0)), dict(data.get("sent", {})),
                   dict(data.get("matches", {})))  # fmt: skip


class SyncClient:
    """``await client.sync(contacts)`` -> contact id -> AOR of the reachable ones."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        *,
        keystore: Keystore | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.tokens = tokens
        self.keystore = keystore
        self._http = http or httpx.AsyncClient(timeout=10.0, trust_env=False)
        kept = keystore.get_json(KEYSTORE_RECORD) if keystore is not None else None
        self.state = ContactSync.restore(kept) if isinstance(kept, dict) else ContactSync()
        self.bytes_up = 0
        self.bytes_down = 0
        self.requests: list[bytes] = []  # request bodies sent (tests check what left)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        auth = await self.tokens.authorization("GET" if body is None else "POST", timeout=30)
        req = self._http.build_request(
            method, self.base + path, json=body, headers={"Authorization": auth}
        )
        self.requests.append(req.content)
        self.bytes_up += len(req.content) + sum(len(k) + len(v) + 4 for k, v in req.headers.raw)
        try:
            resp = await self._http.send(req)
        except httpx.HTTPError as exc:
            raise TransportError(f"sync: {type(exc).__name__}") from None
        self.bytes_down += len(resp.content) + sum(len(k) + len(v) + 4 for k, v in resp.headers.raw)
        if resp.status_code == 401:
            self.tokens.token_refused()
            raise AuthError("sync: token refused")
        return resp

    async def sync(self, contacts: Mapping[str, str]) -> dict[str, str]:
        if not self.state.salt_id:
            await self._fetch_salt()
        while True:
            plan = self.state.plan(contacts)
            resp = await self._call(
                "POST", "/api/v1/phone/contacts/sync",
                {"salt_id": self.state.salt_id, "since": plan.since, "added": list(plan.added)},
            )  # fmt: skip
            if resp.status_code == 409:
                await self._fetch_salt()
                continue
            if resp.status_code != 200:
                raise TransportError(f"sync: server answered {resp.status_code}")
            self.state.apply(plan, resp.json())
            if len(plan.added) < MAX_ADDED_PER_REQUEST:
                break
        if self.keystore is not None:
            self.keystore.put_json(KEYSTORE_RECORD, self.state.snapshot())
        return dict(self.state.matches)

    async def _fetch_salt(self) -> None:
        resp = await self._call("GET", "/api/v1/phone/discovery")
        if resp.status_code != 200:
            raise TransportError(f"discovery salt: server answered {resp.status_code}")
        data = resp.json()
        self.state.set_salt(bytes.fromhex(data["salt"]), str(data["salt_id"]))

    async def aclose(self) -> None:
        await self._http.aclose()
