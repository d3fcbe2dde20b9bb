"""Presence for phones with the least data on the wire and on the server (routes in
:mod:`callward.web.routes.phone`).

* A phone **publishes** its own status (``available``, ``away``, ``busy``, ``dnd``) with a
  lifetime, like a SIP PUBLISH (RFC 3903 §4: the state dies with its ``Expires``); an expired
  status reads ``offline``.
* A phone **watches** at most :data:`MAX_WATCH` AORs of its own tenant: the contacts it
  matched through discovery, never its address book.
* It **reads deltas**: ``GET .../presence?since=V`` answers only what changed among its watched
  AORs after version ``V``; the ETag names the newest version among them (and the watch
  list's revision), so ``If-None-Match`` with the last ETag costs a bodiless 304 when nothing
  changed. A partition or handover on the phone ends in one such revalidation
  (:mod:`callward.ua.cache`: presence is never shown stale).

Kept per process in memory (a restart makes everyone ``offline`` until they publish again:
safe). What a phone watches is not logged or exported.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_WATCH", "STATUSES", "EmergencyInfo", "PresenceStore"]

STATUSES = ("available", "away", "busy", "dnd")
MAX_WATCH = 500
MAX_NOTE = 64


@dataclass(frozen=True, slots=True)
class _State:
    status: str
    note: str
    expires_at: float
    version: int


class PresenceStore:
    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._states: dict[tuple[str, str], _State] = {}  # (tenant, aor) -> state
        self._watch: dict[str, tuple[int, tuple[str, ...]]] = {}  # subject -> (rev, aors)
        self.max_entries = max_entries

    def publish(self, tenant: str, aor: str, status: str, note: str, expires_at: float) -> int:
        if status not in STATUSES:
            raise ValueError(f"status {status[:20]!r}: expected one of {', '.join(STATUSES)}")
        with self._lock:
            self._version += 1
            if len(self._states) >= self.max_entries and (tenant, aor) not in self._states:
                raise ValueError("presence store full")
            self._states[(tenant, aor)] = _State(status, note[:MAX_NOTE], expires_at,
                                                 self._version)  # fmt: skip
            return self._version

    def withdraw(self, tenant: str, aor: str) -> None:
        """An explicit ``offline`` (PUBLISH with Expires: 0)."""
        with self._lock:
            if (tenant, aor) in self._states:
                self._version += 1
                self._states[(tenant, aor)] = _State("offline", "", 0.0, self._version)

    def watch(self, subject: str, aors: list[str]) -> int:
        with self._lock:
            rev = self._watch.get(subject, (0, ()))[0] + 1
            self._watch[subject] = (rev, tuple(sorted(set(aors)))[:MAX_WATCH])
            return rev

    def _expire(self, now: float) -> None:
        for key, st in list(self._states.items()):
            if st.status != "offline" and st.expires_at <= now:
                self._version += 1
                self._states[key] = _State("offline", "", 0.0, self._version)

    def delta(
        self, tenant: str, subject: str, since: int, now: float
    ) -> tuple[str, dict[str, Any]]:
        """(ETag, body) for what changed among ``subject``'s watched AORs after ``since``."""
        with self._lock:
            self._expire(now)
            rev, aors = self._watch.get(subject, (0, ()))
            newest = 0
            changes: list[dict[str, Any]] = []
            for aor in aors:
                st = self._states.get((tenant, aor))
                if st is None:
                    continue
                newest = max(newest, st.version)
                if st.version > since:
                    changes.append({"aor": aor, "status": st.status, "note": st.note})
            etag = f'"{rev}.{newest}"'
            return etag, {"version": newest, "watch": rev, "changes": changes}


@dataclass(frozen=True, slots=True)
class EmergencyInfo:
    """The emergency numbers phones must treat as such (never blocked by credit, fraud or
    registration state) and the route to send them to: a document with a content ETag, cached
    on the phone for ever (usable with no network, ua/cache.py ``emergency``)."""

    numbers: tuple[str, ...]
    route: str

    def document(self) -> tuple[str, bytes]:
        body = json.dumps({"numbers": list(self.numbers), "route": self.route},
                          separators=(",", ":"), sort_keys=True).encode()  # fmt: skip
        return f'"{hashlib.sha256(body).hexdigest()[:16]}"', body
