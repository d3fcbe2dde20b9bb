"""Subscriber and location stores against the real services (PostgreSQL, Redis)."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest

from callward.edge.location import Binding, MemoryLocation, RedisLocation
from callward.edge.subscribers import PostgresSubscribers, SqliteSubscribers, Subscriber

PG = "postgresql://127.0.0.1:5432/test"


def _check_store(store) -> None:
    sub = Subscriber.from_password("alice", "r.example", "pw", tenant="t1")
    store.put(sub)
    got = store.get("alice", "r.example")
    assert got == sub
    # only hashes are stored, and they are the RFC 7616 HA1 values
    assert got.ha1_md5 == hashlib.md5(b"alice:r.example:pw").hexdigest()
    assert got.ha1_sha256 == hashlib.sha256(b"alice:r.example:pw").hexdigest()
    assert store.get("alice", "other") is None
    assert store.delete("alice", "r.example") and store.get("alice", "r.example") is None


def test_sqlite_subscribers(tmp_path) -> None:
    store = SqliteSubscribers(tmp_path / "s.sqlite")
    _check_store(store)
    raw = (tmp_path / "s.sqlite").read_bytes()
    assert b"pw" not in raw.replace(b"pw\x00", b"")  # no plaintext column
    store.close()


@pytest.mark.services
def test_postgres_subscribers() -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG, connect_timeout=2).close()
    except psycopg.Error:
        pytest.skip("why: PostgreSQL not running on 127.0.0.1:5432")
    table = f"cw_subs_{uuid.uuid4().hex[:8]}"
    store = PostgresSubscribers(PG, table=table)
    try:
        _check_store(store)
    finally:
        store.drop()
        store.close()


def _binding(aor: str, key: str, expires_at: float) -> Binding:
    return Binding(aor, f"<sip:{key}@127.0.0.1>", key, expires_at, "c", 1, "udp:127.0.0.1:5")


def _check_location(loc) -> None:
    t = time.time()  # wall clock: Redis key TTLs follow the bindings' absolute expiry
    loc.save(_binding("a@d", "k1", t + 100.0))
    loc.save(_binding("a@d", "k2", t + 200.0))
    assert sorted(b.key for b in loc.lookup("a@d", t + 50.0)) == ["k1", "k2"]
    assert [b.key for b in loc.lookup("a@d", t + 150.0)] == ["k2"]  # k1 expired
    loc.remove("a@d", "k2")
    assert loc.lookup("a@d", t + 150.0) == []
    loc.save(_binding("b@d", "k3", t + 300.0))
    loc.remove_all("b@d")
    assert loc.lookup("b@d", t) == [] and loc.count() == 0


def test_memory_location() -> None:
    _check_location(MemoryLocation())


@pytest.mark.services
def test_redis_location() -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("why: Redis not running on 127.0.0.1:6379")
    loc = RedisLocation("redis://127.0.0.1:6379/0", prefix=f"cwtest-{uuid.uuid4().hex[:8]}")
    try:
        _check_location(loc)
    finally:
        loc.clear()
        loc.close()
