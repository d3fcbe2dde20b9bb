"""Server-side sessions for the dashboard (OWASP Session Management: the cookie is a random
handle, never a credential).

Before: the cookie held the long-lived bearer token itself, and sign-out only asked the browser
to forget it. Now:

* sign-in checks the token once and creates a session; the cookie carries a 256-bit random id
  whose SHA-256 is the only thing the server keeps (a leaked session table opens nothing);
* every sign-in, re-authentication or privilege change issues a **new** id and revokes the old
  one server-side (session fixation, OWASP ASVS V3.2.1/V3.3.1): a cookie planted before login
  or captured before an elevation is dead;
* sign-out revokes the session server-side, so a copied cookie stops working too;
* sessions end after ``idle`` seconds without use or ``absolute`` seconds after sign-in;
* the number of sessions is bounded (oldest dropped), so sign-in floods cannot exhaust memory.

The store is per ``callward web`` process (a restart signs everybody out, which is safe).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from callward.web.settings import Principal

__all__ = ["Session", "SessionStore"]


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    created: float
    last_seen: float
    generation: int = 0  # how many times the id was regenerated (login = 0)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle: float = 30 * 60.0,
        absolute: float = 8 * 3600.0,
        max_sessions: int = 10_000,
    ) -> None:
        self._clock = clock
        self.idle = idle
        self.absolute = absolute
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.revoked = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, principal: Principal, *, replaces: str | None = None) -> str:
        """A new session id for ``principal``; the session ``replaces`` names (the cookie the
        browser sent at sign-in, if any) is revoked first."""
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        with self._lock:
            if replaces is not None and self._sessions.pop(_key(replaces), None) is not None:
                self.revoked += 1
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
            self._sessions[_key(sid)] = Session(principal, now, now)
        return sid

    def get(self, session_id: str | None) -> Principal | None:
        """The principal of a live session (and it counts as use), else None."""
        if not session_id or len(session_id) > 128:
            return None
        now = self._clock()
        key = _key(session_id)
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                return None
            if now - s.last_seen >= self.idle or now - s.created >= self.absolute:
                del self._sessions[key]
                return None
            self._sessions[key] = replace(s, last_seen=now)
            self._sessions.move_to_end(key)
            return s.principal

    def regenerate(self, session_id: str, principal: Principal | None = None) -> str | None:
        """A new id for the same session (re-authentication), or with another ``principal``
        (privilege change); the old id is revoked. None when ``session_id`` is not live."""
        if self.get(session_id) is None:
            return None
        now = self._clock()
        with self._lock:
            old = self._sessions.pop(_key(session_id), None)
            if old is None:
                return None
            self.revoked += 1
            sid = secrets.token_urlsafe(32)
            self._sessions[_key(sid)] = Session(
                principal or old.principal, old.created if principal is None else now, now,
                old.generation + 1,
            )  # fmt: skip
            return sid

    def revoke(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        with self._lock:
            gone = self._sessions.pop(_key(session_id), None) is not None
        self.revoked += gone
        return gone

    def revoke_actor(self, actor: str) -> int:
        """End every session of ``actor`` (token withdrawn, account compromised)."""
        with self._lock:
            keys = [k for k, s in self._sessions.items() if s.principal.actor == actor]
            for k in keys:
                del self._sessions[k]
        self.revoked += len(keys)
        return len(keys)
