"""Hostile header values through the whole ``callward serve`` data path, over real sockets.

Values the strict parser must accept (valid TEXT-UTF8 and Call-ID ``word`` characters) but that
are dangerous downstream — markup in the display name, User-Agent and Call-ID, a template
expression, a right-to-left override, a phone number — ride a call through an edge on the
serve runtime's bus. Afterwards: no log line carries them raw (the number not at all), no
metrics label carries them, the CDR holds the caller by pseudonym, and the dashboard and the
dashboard renders them escaped. Port 27100-27101 (safe15's block)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from callward.config import CallwardConfig
from callward.edge.app import EdgeNode
from callward.records.rows import CdrQuery
from callward.runtime import open_runtime
from callward.sip import Request, Response, parse_message
from callward.web import create_app

pytestmark = pytest.mark.timeout(60)

EDGE, UAS = 27100, 27101
NUMBER = "+15551234567"
MARKUP = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
CALL_ID = f"hostile<b>{uuid.uuid4().hex[:6]}</b>@x"


def _udp(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    s.setblocking(False)
    return s


async def _recv(sock: socket.socket, pred, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        while True:
            msg = parse_message(await loop.sock_recv(sock, 65536))
            if pred(msg):
                return msg


def _answer(req: Request, status: int) -> bytes:
    lines = [f"SIP/2.0 {status} OK"]
    for name, value in req.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route"):
            lines.append(f"{name}: {value}")
        elif name == "To":
            lines.append(f"To: {value};tag=uas")
    lines += [f"Contact: <sip:bob@127.0.0.1:{UAS}>", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_hostile_values_are_never_raw_in_logs_metrics_cdr_or_web(tmp_path: Path) -> None:
    cfg = CallwardConfig.model_validate(
        {
            "storage": {"data_dir": str(tmp_path / "var")},
            "edge": {"listen": [f"udp:127.0.0.1:{EDGE}"], "auth": False,
                     "routes": {"bob": f"sip:bob@127.0.0.1:{UAS}"}},
        }
    )  # fmt: skip
    rt = await open_runtime(cfg)
    node = EdgeNode(cfg, bus=rt.bus)
    await node.start()
    caller, uas = _udp(), _udp(UAS)
    loop = asyncio.get_running_loop()
    port = caller.getsockname()[1]
    display = f'"{MARKUP} \u202eevil {{{{7*7}}}}"'

    def request(method: str, cseq: int, to_tag: str = "") -> bytes:
        return (
            f"{method} sip:bob@callward.local SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: {display} <sip:{NUMBER}@callward.local>;tag=a\r\n"
            f"To: <sip:bob@callward.local>{to_tag}\r\nCall-ID: {CALL_ID}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:{NUMBER}@127.0.0.1:{port}>\r\n"
            f"User-Agent: {IMG} {{{{7*7}}}}\r\nSubject: {MARKUP}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    try:
        with structlog.testing.capture_logs() as logs:
            await loop.sock_sendto(caller, request("INVITE", 1), ("127.0.0.1", EDGE))
            inv = await _recv(uas, lambda m: isinstance(m, Request) and m.method == "INVITE")
            await loop.sock_sendto(uas, _answer(inv, 200), ("127.0.0.1", EDGE))
            ok = await _recv(caller, lambda m: isinstance(m, Response) and m.status == 200)
            await loop.sock_sendto(caller, request("ACK", 1, f";tag={ok.to.tag}"),
                                   ("127.0.0.1", EDGE))  # fmt: skip
            await loop.sock_sendto(caller, request("BYE", 2, f";tag={ok.to.tag}"),
                                   ("127.0.0.1", EDGE))  # fmt: skip
            bye = await _recv(uas, lambda m: isinstance(m, Request) and m.method == "BYE")
            await loop.sock_sendto(uas, _answer(bye, 200), ("127.0.0.1", EDGE))
            await _recv(caller, lambda m: isinstance(m, Response) and m.cseq.method == "BYE")
            assert rt.records is not None
            for _ in range(100):
                if rt.records.store.count(CdrQuery()):
                    break
                await asyncio.sleep(0.05)
        # logs: nothing raw (the structured events the edge and data layer wrote)
        text = json.dumps(logs, default=str)
        for raw in (NUMBER, MARKUP, IMG, "\u202e"):
            assert raw not in text, raw
        # metrics labels: bounded vocabularies only
        metrics = generate_latest(node.metrics.registry).decode()
        for raw in (NUMBER, "<script", "<img", "7*7", CALL_ID):
            assert raw not in metrics, raw
        # the CDR: written; at rest the number is not in the database file in clear
        assert rt.records.store.count(CdrQuery()) == 1
        for db in (tmp_path / "var").glob("cdr*"):
            assert NUMBER.encode() not in db.read_bytes(), db
        # the web: dashboard and call detail escape what they show
        with TestClient(create_app(cfg, rt.records), client=("127.0.0.1", 50000)) as c:
            page = c.get("/").text
            assert "hostile&lt;b&gt;" in page  # the call is listed, its Call-ID escaped
            assert "<script>alert" not in page and "<b>" not in page and "<img" not in page
            assert NUMBER not in page
    finally:
        caller.close()
        uas.close()
        await node.stop()
        await rt.close()
