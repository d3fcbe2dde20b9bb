"""Two `callward serve` nodes publishing to NATS JetStream, CDRs written to PostgreSQL by
`callward cdr consume`, on loopback (NATS 127.0.0.1:4222, PostgreSQL 127.0.0.1:5432 db `test`).

SIPp places calls on both nodes at once (each node's edge anchors media in its own relay);
mid-stream the consumer is killed with SIGKILL and a new one takes over the same durable
consumer. Then node B is killed with SIGKILL and node A keeps serving new calls. Every call
SIPp completed must have exactly one CDR in PostgreSQL, answered and built from both the
edge's and the relay's events: none lost, none duplicated. The stream and subjects are this
run's own (``storage.nats_stream`` / ``nats_prefix``), so other users of the server do not mix
in; CDRs are found by this run's Call-IDs (SIPp ``-cid_str``)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from callward.records.rows import CdrQuery
from callward.records.service import open_records
from peers import CALLWARD_CLI, free_port, sipp_client_cmd, sipp_uas, stop

pytestmark = [pytest.mark.interop, pytest.mark.services, pytest.mark.timeout(180)]

NATS = "nats://127.0.0.1:4222"
PG = "postgresql://127.0.0.1:5432/test"


def reachable(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def serve(work: Path, name: str, config: str) -> subprocess.Popen[str]:
    cfg = work / f"{name}.yaml"
    cfg.write_text(config)
    log = (work / f"{name}.log").open("w")
    proc = subprocess.Popen([*CALLWARD_CLI, "serve", "--config", str(cfg), "--no-web", "--json"],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=work)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # log lines may come first
        if '"serving"' in line:
            return proc
    raise AssertionError((work / f"{name}.log").read_text()[-1500:])


def consumer(work: Path, cfg: Path, stream: str, prefix: str) -> subprocess.Popen[bytes]:
    log = (work / f"consumer-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(
        [*CALLWARD_CLI, "cdr", "consume", "--config", str(cfg), "--stream", stream,
         "--prefix", prefix, "--durable", "cdr-writer"],
        stdout=log, stderr=subprocess.STDOUT, cwd=work,
    )  # fmt: skip


def cdrs_of(var: Path, call_ids: list[str]) -> list:  # type: ignore[type-arg]
    rec = open_records(var, postgres_url=PG)
    try:
        out = []
        for i in range(0, len(call_ids), 200):
            out += rec.store.query(CdrQuery(call_ids=tuple(call_ids[i : i + 200]), limit=1000))
        return out
    finally:
        rec.close()


def test_two_serve_nodes_jetstream_postgres_consumer_and_node_killed(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.skip("why: sipp not installed")
    if not reachable(4222) or not reachable(5432):
        pytest.skip("why: NATS (4222) or PostgreSQL (5432) not running on 127.0.0.1")
    run = uuid.uuid4().hex[:10]
    stream, prefix = f"CWMN_{run}", f"cwmn.{run}.callward.events"
    var = tmp_path / "var"  # the consumers' keys (CDR fields are encrypted with them)
    sip_a, sip_b, uas, ng_a, ng_b = (free_port((10000, 20000)) for _ in range(5))
    storage = (f"storage: {{data_dir: {var}, nats_url: '{NATS}', postgres_url: '{PG}',"
               f" nats_stream: {stream}, nats_prefix: '{prefix}'}}\n")  # fmt: skip
    consume_cfg = tmp_path / "consume.yaml"
    consume_cfg.write_text(storage + "records: {grace_s: 0.5}\n")

    def node(sip: int, ng: int, name: str, ports: tuple[int, int]) -> str:
        return storage.replace(str(var), str(tmp_path / f"var-{name}")) + (
            f"edge: {{node_id: {name}, listen: ['udp:127.0.0.1:{sip}'], auth: false,"
            f" routes: {{service: 'sip:service@127.0.0.1:{uas}'}}}}\n"
            f"media: {{ng_listen: '127.0.0.1:{ng}', relay_node_id: relay-{name},"
            f" rtp_port_min: {ports[0]}, rtp_port_max: {ports[1]}}}\n"
        )

    procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
    call_ids: list[str] = []

    def calls(sip: int, tag: str, n: int, rate: int) -> subprocess.Popen[str]:
        call_ids.extend(f"{run}-{tag}-{u}@cw" for u in range(1, n + 1))
        cmd = sipp_client_cmd(sip, calls=n, rate=rate,
                              extra=["-cid_str", f"{run}-{tag}-%u@cw", "-d", "300"])  # fmt: skip
        return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip

    try:
        with sipp_uas(tmp_path, uas):
            a = serve(tmp_path, "edge-a", node(sip_a, ng_a, "edge-a", (22000, 22499)))
            b = serve(tmp_path, "edge-b", node(sip_b, ng_b, "edge-b", (22500, 22999)))
            procs += [a, b]
            c1 = consumer(tmp_path, consume_cfg, stream, prefix)
            procs.append(c1)
            runs = [calls(sip_a, "a1", 60, 15), calls(sip_b, "b1", 60, 15)]
            time.sleep(2.0)  # mid-stream: the consumer dies without acking what it holds
            c1.send_signal(signal.SIGKILL)
            c1.wait(10)
            time.sleep(1.0)
            c2 = consumer(tmp_path, consume_cfg, stream, prefix)
            procs.append(c2)
            for r in runs:
                out, _ = r.communicate(timeout=90)
                assert r.returncode == 0, out[-1500:]
            # node B dies; node A keeps serving
            b.send_signal(signal.SIGKILL)
            b.wait(10)
            r = calls(sip_a, "a2", 20, 10)
            out, _ = r.communicate(timeout=60)
            assert r.returncode == 0, out[-1500:]
            deadline = time.monotonic() + 30
            found = cdrs_of(var, call_ids)
            while len({c.call_id for c in found}) < len(call_ids) and time.monotonic() < deadline:
                time.sleep(1.0)
                found = cdrs_of(var, call_ids)
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p, grace=15)
        asyncio.run(_drop_stream(stream))
    ids = [c.call_id for c in found]
    assert len(ids) == len(set(ids)), "a CDR was duplicated"
    assert set(ids) == set(call_ids), f"{len(set(call_ids) - set(ids))} CDRs lost"
    for c in found:
        assert c.disposition == "answered" and c.status == 200, (c.call_id, c.flags)
        nodes = set(c.lineage.nodes)
        assert any(n.startswith("edge-") for n in nodes), nodes
        assert any(n.startswith("relay-edge-") for n in nodes), nodes  # the relay's stats


async def _drop_stream(stream: str) -> None:
    import nats

    try:
        nc = await nats.connect(NATS, connect_timeout=2, max_reconnect_attempts=1)
    except Exception:
        return
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:
        pass
    await nc.close()
