"""A CDR consumer process for test_bus.py: it is killed on purpose (os._exit / SIGKILL)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from callward.privacy import FieldCipher, KeyStore, Pseudonymizer
from callward.records.bus import CdrConsumer, connect
from callward.records.rows import RecordCodec
from callward.records.store_sqlite import SqliteCdrStore


async def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("url", "stream", "prefix", "durable", "dir"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--crash-after-batches", type=int, default=0)
    ap.add_argument("--idle-exit", type=float, default=3.0)
    a = ap.parse_args()
    d = Path(a.dir)
    keys = KeyStore(d / "keys.db", bytes(range(32)))
    codec = RecordCodec(FieldCipher(keys, Pseudonymizer(b"pseudonym-key-for-tests")))
    store = SqliteCdrStore(d / "cdr.db", codec, batch_size=500)
    nc = await connect(a.url)
    batches = [0]

    def hook(n: int) -> None:
        batches[0] += 1
        if a.crash_after_batches and batches[0] >= a.crash_after_batches:
            os._exit(9)  # journal committed, messages NOT acked: a crash at the worst moment

    consumer = CdrConsumer(
        nc.jetstream(), a.stream, a.durable, store, prefix=a.prefix, batch=20, ack_wait_s=2.0,
        grace_s=0.0, on_journaled=hook,
    )  # fmt: skip
    print(json.dumps({"recovered": consumer.recover()}), flush=True)
    await consumer.run(asyncio.Event(), idle_exit_s=a.idle_exit)
    print(json.dumps({"acked": consumer.acked, "written": consumer.written}), flush=True)
    store.close()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
