"""Client telemetry (call quality, data usage) from the phone: bounded, batched, compressed.

:class:`TelemetryQueue` is sans-IO:

* a bounded queue (``max_records``); under pressure the **oldest** record is dropped and
  counted (``dropped``), so memory is fixed and the newest state of the phone survives;
* batches of at most ``batch_records``, JSON then zstd (RFC 8878) at level 19: small batches of
  similar records compress 5-10x, which is what a metered mobile link cares about;
* a batch is due every ``interval`` seconds (radio wake-ups are expensive: one upload per
  interval, not per record) or as soon as ``batch_records`` are waiting;
* failures back off exponentially with jitter (``Retry-After`` honoured); the batch goes back
  to the head of the queue, so nothing is lost unless the queue overflows;
* a per-UTC-day byte cap (``daily_bytes``, compressed bytes): once reached, nothing is sent
  until the next day, whatever is queued (the queue keeps dropping its oldest).

:class:`TelemetryUploader` is the asyncio/httpx adapter posting to ``callward web``
(``POST /api/v1/phone/telemetry``, ``Content-Encoding: zstd``, Bearer token).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import zstandard

from callward.errors import AuthError, TransportError
from callward.ua.tokens import TokenSource

__all__ = ["TelemetryPolicy", "TelemetryQueue", "TelemetryUploader"]

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class TelemetryPolicy:
    max_records: int = 2000
    batch_records: int = 200
    interval: float = 3600.0
    daily_bytes: int = 64 * 1024
    backoff_base: float = 5.0
    backoff_cap: float = 3600.0
    level: int = 19


class TelemetryQueue:
    def __init__(
        self, policy: TelemetryPolicy | None = None, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.policy = policy or TelemetryPolicy()
        self._rand = rand
        self._queue: deque[dict[str, Any]] = deque()
        self._inflight: list[dict[str, Any]] = []
        self._next_at: float | None = None
        self._attempt = 0
        self._day = -1
        self.sent_today = 0
        self.dropped = 0
        self.bytes_sent = 0
        self.batches_sent = 0
        self._cctx = zstandard.ZstdCompressor(level=self.policy.level)

    def __len__(self) -> int:
        return len(self._queue) + len(self._inflight)

    def record(self, kind: str, now: float, **fields: float | int | str | bool) -> None:
        """Queue one flat record (no personal data: metrics, codecs, counts)."""
        if len(self) >= self.policy.max_records:
            if self._queue:
                self._queue.popleft()
                self.dropped += 1
            else:
                self.dropped += 1
                return
        self._queue.append({"kind": kind, "ts": round(now, 3), **fields})
        if self._next_at is None:
            self._next_at = now + self.policy.interval

    def _roll(self, now: float) -> None:
        day = int(now // DAY)
        if day != self._day:
            self._day, self.sent_today = day, 0

    def next_batch(self, now: float) -> bytes | None:
        """The compressed batch to send now, or None (nothing due, backing off, cap reached)."""
        self._roll(now)
        if self._inflight or not self._queue:
            return None
        due = len(self._queue) >= self.policy.batch_records or (
            self._next_at is not None and now >= self._next_at
        )
        if not due or (self._next_at is not None and now < self._next_at and self._attempt):
            return None
        batch = [self._queue.popleft() for _ in range(min(self.policy.batch_records,
                                                           len(self._queue)))]  # fmt: skip
        body = self._cctx.compress(json.dumps(batch, separators=(",", ":")).encode())
        while len(batch) > 1 and self.sent_today + len(body) > self.policy.daily_bytes:
            self._queue.extendleft(reversed(batch[len(batch) // 2 :]))  # send less, keep the rest
            batch = batch[: len(batch) // 2]
            body = self._cctx.compress(json.dumps(batch, separators=(",", ":")).encode())
        if self.sent_today + len(body) > self.policy.daily_bytes:
            self._queue.extendleft(reversed(batch))
            self._next_at = (self._day + 1) * DAY  # capped: wait for the next UTC day
            return None
        self._inflight = batch
        self.sent_today += len(body)  # counted when it leaves, whether or not it arrives
        return body

    def batch_done(self, now: float, ok: bool, *, retry_after: float | None = None) -> None:
        if ok:
            self.batches_sent += 1
            self._inflight = []
            self._attempt = 0
            self._next_at = now + self.policy.interval if self._queue else None
            return
        self._queue.extendleft(reversed(self._inflight))
        self._inflight = []
        while len(self._queue) > self.policy.max_records:
            self._queue.popleft()
            self.dropped += 1
        p = self.policy
        delay = min(p.backoff_cap, p.backoff_base * 2.0**self._attempt) * (0.5 + 0.5 * self._rand())
        self._attempt += 1
        self._next_at = now + max(delay, retry_after or 0.0)

    def batch_rejected(self, now: float) -> None:
        """The server refused the batch for good (malformed, too large): drop it."""
        self.dropped += len(self._inflight)
        self._inflight = []
        self._attempt = 0
        self._next_at = now + self.policy.interval if self._queue else None

    def get_timer(self) -> float | None:
        return self._next_at if self._queue and not self._inflight else None


class TelemetryUploader:
    """Runs a :class:`TelemetryQueue` against ``callward web``."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        queue: TelemetryQueue,
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/api/v1/phone/telemetry"
        self.tokens = tokens
        self.queue = queue
        self._clock = clock
        self._http = http or httpx.AsyncClient(timeout=10.0, trust_env=False)
        self.bytes_up = 0
        self.bytes_down = 0

    async def flush_once(self) -> bool:
        """Send one batch if one is due; True when a batch was accepted."""
        body = self.queue.next_batch(self._clock())
        if body is None:
            return False
        try:
            auth = await self.tokens.authorization("POST", timeout=30)
            req = self._http.build_request("POST", self.url, content=body, headers={
                "Authorization": auth, "Content-Encoding": "zstd",
                "Content-Type": "application/json",
            })  # fmt: skip
            self.bytes_up += len(body) + sum(len(k) + len(v) + 4 for k, v in req.headers.raw)
            resp = await self._http.send(req)
            self.bytes_down += len(resp.content) + sum(
                len(k) + len(v) + 4 for k, v in resp.headers.raw
            )
        except (httpx.HTTPError, AuthError, TimeoutError):
            self.queue.batch_done(self._clock(), False)
            return False
        if resp.status_code == 401:
            self.tokens.token_refused()
        ok = resp.status_code == 202
        if resp.status_code in (413, 415, 422):  # the server will never take it: drop
            self.queue.batch_rejected(self._clock())
            return False
        retry = resp.headers.get("Retry-After")
        self.queue.batch_done(
            self._clock(), ok, retry_after=float(retry) if retry and retry.isdigit() else None
        )
        return ok

    async def run(self) -> None:
        """Flush forever at the queue's deadlines (cancel to stop)."""
        while True:
            timer = self.queue.get_timer()
            delay = 60.0 if timer is None else max(0.0, timer - self._clock())
            await asyncio.sleep(min(delay, 60.0))
            try:
                await self.flush_once()
            except TransportError:
                pass

    async def aclose(self) -> None:
        await self._http.aclose()
