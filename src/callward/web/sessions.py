"""Server-side sessions for the dashboard (OWASP Session Management: the cookie is a random
handle, never a credential), shared by every ``callward web`` worker.

* sign-in checks the token once and creates a session; the cookie carries a 256-bit random id
  whose SHA-256 is the only thing the server keeps (a leaked session table opens nothing);
* every sign-in, re-authentication or privilege change issues a **new** id and revokes the old
  one server-side (session fixation, OWASP ASVS V3.2.1/V3.3.1): a cookie planted before login
  or captured before an elevation is dead, in *every* worker, because the store is shared;
* sign-out revokes the session server-side, so a copied cookie stops working too;
* sessions end after ``idle`` seconds without use or ``absolute`` seconds after sign-in;
* the number of sessions is bounded (oldest dropped), so sign-in floods cannot exhaust memory.

Where sessions live (``sessions:`` in the web settings; :func:`open_session_store`):

* ``sqlite`` (default): ``<data_dir>/web-sessions.sqlite`` in WAL mode, shared by the workers
  of one host; regeneration is ``DELETE ... RETURNING`` in one transaction, so two workers
  racing to regenerate the same id cannot both win;
* ``redis://host:port/db``: for workers on several hosts; keys expire with the idle timeout,
  regeneration takes the old key with ``GETDEL`` (atomic);
* ``memory``: one process only (tests, a single worker).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from callward.errors import ConfigError, StoreError
from callward.web.settings import Principal

__all__ = [
    "MemorySessions",
    "RedisSessions",
    "Session",
    "SessionStore",
    "SqliteSessions",
    "open_session_store",
]


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    created: float
    last_seen: float
    generation: int = 0  # how many times the id was regenerated (login = 0)

    def dump(self) -> str:
        return json.dumps({"p": self.principal.model_dump(mode="json"), "c": self.created,
                           "l": self.last_seen, "g": self.generation})  # fmt: skip

    @staticmethod
    def load(raw: str | bytes) -> Session | None:
        try:
            d = json.loads(raw)
            return Session(Principal.model_validate(d["p"]), float(d["c"]), float(d["l"]),
                           int(d["g"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None  # a row we cannot read is no session


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


class SessionBackend(Protocol):
    """Rows keyed by the SHA-256 of the id. ``take`` deletes and returns atomically."""

    def insert(self, key: str, s: Session, max_sessions: int) -> None: ...
    def fetch(self, key: str) -> Session | None: ...
    def touch(self, key: str, s: Session) -> None: ...
    def take(self, key: str) -> Session | None: ...
    def delete(self, key: str) -> bool: ...
    def delete_actor(self, actor: str) -> int: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


class MemorySessions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: OrderedDict[str, Session] = OrderedDict()

    def insert(self, key: str, s: Session, max_sessions: int) -> None:
        with self._lock:
            while len(self._rows) >= max_sessions:
                self._rows.popitem(last=False)
            self._rows[key] = s

    def fetch(self, key: str) -> Session | None:
        return self._rows.get(key)

    def touch(self, key: str, s: Session) -> None:
        with self._lock:
            if key in self._rows:
                self._rows[key] = s
                self._rows.move_to_end(key)

    def take(self, key: str) -> Session | None:
        with self._lock:
            return self._rows.pop(key, None)

    def delete(self, key: str) -> bool:
        return self.take(key) is not None

    def delete_actor(self, actor: str) -> int:
        with self._lock:
            keys = [k for k, s in self._rows.items() if s.principal.actor == actor]
            for k in keys:
                del self._rows[k]
        return len(keys)

    def count(self) -> int:
        return len(self._rows)

    def close(self) -> None:
        pass


class SqliteSessions:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=5.0)  # fmt: skip
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS session (key TEXT PRIMARY KEY, actor TEXT NOT NULL,"
                " created REAL NOT NULL, row TEXT NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS session_created ON session(created)")
        except sqlite3.Error as exc:
            raise StoreError(f"web sessions {path.name}: {exc}") from None
        path.chmod(0o600)
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"web sessions: {exc}") from None

    def insert(self, key: str, s: Session, max_sessions: int) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                (n,) = self._db.execute("SELECT count(*) FROM session").fetchone()
                if n >= max_sessions:
                    self._db.execute(
                        "DELETE FROM session WHERE key IN (SELECT key FROM session "
                        "ORDER BY created LIMIT ?)", (n - max_sessions + 1,))  # fmt: skip
                self._db.execute("INSERT OR REPLACE INTO session VALUES (?, ?, ?, ?)",
                                 (key, s.principal.actor, s.created, s.dump()))  # fmt: skip
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"web sessions: {exc}") from None

    def fetch(self, key: str) -> Session | None:
        rows = self._run("SELECT row FROM session WHERE key = ?", (key,))
        return Session.load(rows[0][0]) if rows else None

    def touch(self, key: str, s: Session) -> None:
        self._run("UPDATE session SET row = ? WHERE key = ?", (s.dump(), key))

    def take(self, key: str) -> Session | None:
        rows = self._run("DELETE FROM session WHERE key = ? RETURNING row", (key,))
        return Session.load(rows[0][0]) if rows else None

    def delete(self, key: str) -> bool:
        return bool(self._run("DELETE FROM session WHERE key = ? RETURNING key", (key,)))

    def delete_actor(self, actor: str) -> int:
        return len(self._run("DELETE FROM session WHERE actor = ? RETURNING key", (actor,)))

    def count(self) -> int:
        return int(self._run("SELECT count(*) FROM session")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisSessions:
    """``<prefix>:s:<key>`` rows expiring with the idle timeout, ``<prefix>:idx`` (a sorted set
    by creation time, for the bound) and ``<prefix>:a:<actor hash>`` (a set, for revoke-all)."""

    def __init__(self, url: str, idle: float, prefix: str = "callward:websession") -> None:
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=2.0)
        self._err = redis.RedisError
        self.prefix = prefix
        self.ttl = max(1, int(idle) + 1)

    def _actor(self, actor: str) -> str:
        return f"{self.prefix}:a:{hashlib.sha256(actor.encode()).hexdigest()[:32]}"

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._err as exc:
            raise StoreError(f"web sessions (redis): {type(exc).__name__}") from None

    def insert(self, key: str, s: Session, max_sessions: int) -> None:
        def go() -> None:
            idx = f"{self.prefix}:idx"
            pipe = self._r.pipeline()
            pipe.set(f"{self.prefix}:s:{key}", s.dump(), ex=self.ttl)
            pipe.zadd(idx, {key: s.created})
            pipe.sadd(self._actor(s.principal.actor), key)
            pipe.expire(self._actor(s.principal.actor), self.ttl)
            pipe.execute()
            extra = int(self._r.zcard(idx)) - max_sessions
            if extra > 0:
                popped: list[tuple[bytes, float]] = self._r.zpopmin(idx, extra)  # type: ignore[assignment]
                for old, _ in popped:
                    self._r.delete(f"{self.prefix}:s:{old.decode()}")

        self._call(go)

    def fetch(self, key: str) -> Session | None:
        raw = self._call(lambda: self._r.get(f"{self.prefix}:s:{key}"))
        return None if raw is None else Session.load(raw)

    def touch(self, key: str, s: Session) -> None:
        self._call(lambda: self._r.set(f"{self.prefix}:s:{key}", s.dump(), ex=self.ttl, xx=True))

    def take(self, key: str) -> Session | None:
        raw = self._call(lambda: self._r.getdel(f"{self.prefix}:s:{key}"))
        if raw is None:
            return None
        self._call(lambda: self._r.zrem(f"{self.prefix}:idx", key))
        return Session.load(raw)

    def delete(self, key: str) -> bool:
        return self.take(key) is not None

    def delete_actor(self, actor: str) -> int:
        keys = self._call(lambda: self._r.smembers(self._actor(actor)))
        n = 0
        for k in keys:
            n += self.delete(k.decode())
        self._call(lambda: self._r.delete(self._actor(actor)))
        return n

    def count(self) -> int:
        return int(self._call(lambda: self._r.zcard(f"{self.prefix}:idx")))

    def close(self) -> None:
        self._r.close()


class SessionStore:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle: float = 30 * 60.0,
        absolute: float = 8 * 3600.0,
        max_sessions: int = 10_000,
        backend: SessionBackend | None = None,
    ) -> None:
        self._clock = clock
        self.idle = idle
        self.absolute = absolute
        self.max_sessions = max_sessions
        self.backend: SessionBackend = backend if backend is not None else MemorySessions()
        self.revoked = 0  # by this process (a metric)

    def __len__(self) -> int:
        return self.backend.count()

    def create(self, principal: Principal, *, replaces: str | None = None) -> str:
        """A new session id for ``principal``; the session ``replaces`` names (the cookie the
        browser sent at sign-in, if any) is revoked first."""
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        if replaces is not None and len(replaces) <= 128 and self.backend.delete(_key(replaces)):
            self.revoked += 1
        self.backend.insert(_key(sid), Session(principal, now, now), self.max_sessions)
        return sid

    def _live(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        now = self._clock()
        key = _key(session_id)
        s = self.backend.fetch(key)
        if s is None:
            return None
        if now - s.last_seen >= self.idle or now - s.created >= self.absolute:
            self.backend.delete(key)
            return None
        s = replace(s, last_seen=now)
        self.backend.touch(key, s)
        return s

    def get(self, session_id: str | None) -> Principal | None:
        """The principal of a live session (and it counts as use), else None."""
        s = self._live(session_id)
        return None if s is None else s.principal

    def regenerate(self, session_id: str, principal: Principal | None = None) -> str | None:
        """A new id for the same session (re-authentication), or with another ``principal``
        (privilege change); the old id is revoked. None when ``session_id`` is not live or
        another worker regenerated it first."""
        if self._live(session_id) is None:
            return None
        old = self.backend.take(_key(session_id))
        if old is None:
            return None
        self.revoked += 1
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        self.backend.insert(_key(sid), Session(
            principal or old.principal, old.created if principal is None else now, now,
            old.generation + 1,
        ), self.max_sessions)  # fmt: skip
        return sid

    def revoke(self, session_id: str | None) -> bool:
        if not session_id or len(session_id) > 128:
            return False
        gone = self.backend.delete(_key(session_id))
        self.revoked += gone
        return gone

    def revoke_actor(self, actor: str) -> int:
        """End every session of ``actor`` (token withdrawn, account compromised)."""
        n = self.backend.delete_actor(actor)
        self.revoked += n
        return n

    def close(self) -> None:
        self.backend.close()


def open_session_store(where: str, data_dir: Path, clock: Callable[[], float]) -> SessionStore:
    """``memory``, ``sqlite`` (``<data_dir>/web-sessions.sqlite``) or ``redis://...``."""
    idle = 30 * 60.0
    if where == "memory":
        backend: SessionBackend = MemorySessions()
    elif where == "sqlite":
        backend = SqliteSessions(data_dir / "web-sessions.sqlite")
    elif where.startswith(("redis://", "rediss://")):
        backend = RedisSessions(where, idle)
    else:
        raise ConfigError(f"sessions {where[:40]!r}: expected memory, sqlite or redis://...")
    return SessionStore(clock, idle=idle, backend=backend)
