"""TelemetryQueue (sans-IO): bounded with drop-oldest, zstd batches, backoff, daily byte cap."""

from __future__ import annotations

import json

import zstandard

from callward.ua.telemetry import DAY, TelemetryPolicy, TelemetryQueue

T0 = 1_900_000_000.0 - 1_900_000_000.0 % DAY  # midnight UTC


def _decode(body: bytes) -> list[dict[str, object]]:
    out: list[dict[str, object]] = json.loads(zstandard.ZstdDecompressor().decompress(body))
    return out


def test_drop_oldest_under_pressure() -> None:
    q = TelemetryQueue(TelemetryPolicy(max_records=10, batch_records=100, interval=60))
    for i in range(25):
        q.record("usage", T0 + i, n=i)
    assert len(q) == 10 and q.dropped == 15
    body = q.next_batch(T0 + 100)
    assert body is not None
    assert [r["n"] for r in _decode(body)] == list(range(15, 25))  # the newest survive


def test_backoff_grows_with_jitter_and_keeps_records() -> None:
    q = TelemetryQueue(TelemetryPolicy(batch_records=5, interval=60, backoff_base=5,
                                       backoff_cap=100), rand=lambda: 0.0)  # fmt: skip
    for i in range(5):
        q.record("q", T0, n=i)
    waits = []
    now = T0
    for _ in range(6):
        assert q.next_batch(now) is not None
        q.batch_done(now, False)
        timer = q.get_timer()
        assert timer is not None
        waits.append(timer - now)
        assert q.next_batch(timer - 0.01) is None  # no early retry
        now = timer
    assert waits == [2.5, 5.0, 10.0, 20.0, 40.0, 50.0]  # base*2^n/2 (jitter floor), capped
    body = q.next_batch(now)
    assert body is not None and len(_decode(body)) == 5  # nothing lost
    q.batch_done(now, True, retry_after=None)
    assert len(q) == 0


def test_retry_after_is_honoured() -> None:
    q = TelemetryQueue(TelemetryPolicy(batch_records=1), rand=lambda: 0.0)
    q.record("q", T0)
    assert q.next_batch(T0) is not None
    q.batch_done(T0, False, retry_after=600)
    assert q.get_timer() == T0 + 600


def test_daily_byte_cap() -> None:
    q = TelemetryQueue(TelemetryPolicy(batch_records=100, interval=1, daily_bytes=2000, level=3))
    sent = 0
    now = T0 + 10
    for i in range(600):
        q.record("q", now, n=i, v=f"{i * 7919 % 10007:05d}")  # poorly compressible
        body = q.next_batch(now)
        if body is not None:
            sent += len(body)
            q.batch_done(now, True)
        now += 2
    assert 0 < sent <= 2000 and q.sent_today == sent
    # the next UTC day the cap resets
    body = q.next_batch(T0 + DAY + 1)
    assert body is not None and len(body) <= 2000
