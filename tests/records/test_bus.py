"""NATS JetStream transport against the real server, with consumers killed mid-stream."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import nats
import pytest

from callward.events import CallAnswered, CallEnded, CallStarted, MediaStats, event_to_dict
from callward.privacy import FieldCipher, KeyStore, Pseudonymizer
from callward.records.assembly import CallAssembler
from callward.records.bus import JetStreamPublisher, ensure_stream, subject_for
from callward.records.rows import CdrQuery, RecordCodec
from callward.records.store_sqlite import SqliteCdrStore

URL = "nats://127.0.0.1:4222"
PROC = Path(__file__).with_name("bus_consumer_proc.py")
pytestmark = [pytest.mark.services, pytest.mark.timeout(120)]


def call_events(i: int, tenant: str) -> list:
    cid = f"bus-{i}@edge"
    a, b = f"tel:+447700900{i:03d}", f"tel:+447700901{i:03d}"
    t = 1_760_000_000.0 + i
    return [
        CallStarted(ts=t, node="edge-1", seq=4 * i, tenant=tenant, call_id=cid, leg="a",
                    caller=a, callee=b, sdp_summary="PCMA/8000"),
        CallAnswered(ts=t + 2, node="edge-1", seq=4 * i + 1, tenant=tenant, call_id=cid, leg="a"),
        MediaStats(ts=t + 30, node="relay-1", seq=i, tenant=tenant, call_id=cid, leg="a", ssrc=i,
                   packets=1500 + i, lost=i % 7, mos=4.0),
        CallEnded(ts=t + 31, node="edge-2", seq=4 * i + 2, tenant=tenant, call_id=cid, leg="a",
                  status=200, reason="bye"),
    ]  # fmt: skip


def test_subject_names() -> None:
    ev = CallStarted(ts=1.0, node="n", seq=1, tenant="acme.eu *", call_id="c")
    assert subject_for(ev) == "callward.events.acme_eu__.call_started"


def _consumer(tmp: Path, stream: str, prefix: str, *extra: str) -> subprocess.Popen:
    args = ["--url", URL, "--stream", stream, "--prefix", prefix, "--durable", "cdr",
            "--dir", str(tmp), *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    return subprocess.Popen(
        [sys.executable, str(PROC), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


async def test_consumer_killed_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    try:
        nc = await nats.connect(URL, connect_timeout=2, max_reconnect_attempts=1)
    except Exception:
        pytest.skip("why: NATS JetStream not reachable on 127.0.0.1:4222")
    run = uuid.uuid4().hex[:10]
    stream, prefix = f"CWTEST_{run}", f"cwtest.{run}.callward.events"
    js = nc.jetstream()
    procs: list[subprocess.Popen] = []
    try:
        await ensure_stream(js, stream, prefix, memory=True)
        n_calls = 60
        events = [e for i in range(n_calls) for e in call_events(i, "acme")]
        rnd = random.Random(5)
        rnd.shuffle(events)  # events of a call interleave with others, out of order
        pub = JetStreamPublisher(js, prefix)
        for ev in events:
            await pub.publish(ev)
        # a node replays 30 events after a restart: same key, new message ids (not deduped by
        # JetStream), so only the assembler's idempotency protects the CDRs
        for ev in rnd.sample(events, 30):
            await js.publish(
                subject_for(ev, prefix),
                json.dumps(event_to_dict(ev)).encode(),
                headers={"Nats-Msg-Id": f"replay-{uuid.uuid4().hex}"},
            )
        total = len(events) + 30

        # 1) crash after the 3rd batch is journaled but before it is acked
        p1 = _consumer(tmp_path, stream, prefix, "--crash-after-batches", "3")
        procs.append(p1)
        assert p1.wait(timeout=60) == 9
        # 2) SIGKILL at an arbitrary moment while consuming
        p2 = _consumer(tmp_path, stream, prefix, "--idle-exit", "30")
        procs.append(p2)
        first = json.loads(await asyncio.to_thread(p2.stdout.readline))  # type: ignore[union-attr]
        assert first["recovered"] == 60  # 3 batches of 20 journaled before the crash
        await asyncio.sleep(0.5)
        p2.send_signal(signal.SIGKILL)
        p2.wait(timeout=10)
        # 3) a clean consumer drains the rest (redeliveries come after ack_wait = 2 s)
        p3 = _consumer(tmp_path, stream, prefix, "--idle-exit", "4")
        procs.append(p3)
        out, err = p3.communicate(timeout=90)
        assert p3.returncode == 0, err.decode()[-2000:]
        recovered, summary = (json.loads(x) for x in out.decode().splitlines())
        assert recovered["recovered"] >= 60 and summary["acked"] < total

        info = await js.consumer_info(stream, "cdr")
        assert info.num_pending == 0 and info.num_ack_pending == 0
        assert info.delivered.stream_seq == total

        keys = KeyStore(tmp_path / "keys.db", bytes(range(32)))
        codec = RecordCodec(FieldCipher(keys, Pseudonymizer(b"pseudonym-key-for-tests")))
        store = SqliteCdrStore(tmp_path / "cdr.db", codec)
        got = {c.call_id: c for c in store.query(CdrQuery())}
        assert len(got) == n_calls  # none lost
        ref = CallAssembler()
        ref.add_many(events)
        for cid in ref.call_ids():  # none double-counted: equal to an assembly without crashes
            want, have = ref.build(cid), got[cid]
            assert (have.caller, have.callee, have.packets, have.lineage.events) == (
                want.caller, want.callee, want.packets, want.lineage.events)  # fmt: skip
            assert have.flags == () and have.disposition == "answered"
        n = store._db.execute("SELECT COUNT(*), COUNT(DISTINCT call_id) FROM cdr").fetchone()
        assert n == (n_calls, n_calls)
        store.close()
        keys.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        try:
            await js.delete_stream(stream)
        finally:
            await nc.close()


async def test_cli_consume_and_jetstream_dedup(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from callward.cli import app

    try:
        nc = await nats.connect(URL, connect_timeout=2, max_reconnect_attempts=1)
    except Exception:
        pytest.skip("why: NATS JetStream not reachable on 127.0.0.1:4222")
    run = uuid.uuid4().hex[:10]
    stream, prefix = f"CWTEST_{run}", f"cwtest.{run}.callward.events"
    js = nc.jetstream()
    try:
        await ensure_stream(js, stream, prefix, memory=True)
        pub = JetStreamPublisher(js, prefix)
        events = [e for i in range(5) for e in call_events(i, "beta")]
        for ev in events + events[:7]:  # a publisher retry: same Nats-Msg-Id, deduped by JetStream
            await pub.publish(ev)
        info = await js.stream_info(stream)
        assert info.state.messages == len(events)
        args = ["cdr", "consume", "--nats", URL, "--stream", stream, "--prefix", prefix,
                "--idle-exit", "1.5", "--data-dir", str(tmp_path / "var")]  # fmt: skip
        r = await asyncio.to_thread(CliRunner().invoke, app, args)
        assert r.exit_code == 0, r.output
        assert f"acked {len(events)} event(s), wrote 5 CDR(s)" in r.stdout
    finally:
        try:
            await js.delete_stream(stream)
        finally:
            await nc.close()
