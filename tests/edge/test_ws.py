"""SIP over WebSocket (RFC 7118) at the edge: a browser-style client registers over WS and is
called from UDP over the same WebSocket (UDP ↔ WS bridging, RFC 5626 flow reuse)."""

from __future__ import annotations

import asyncio
import socket
import uuid

from websockets.asyncio.client import connect

from callward.config import CallwardConfig, EdgeConfig
from callward.edge.app import EdgeNode
from callward.sip import Request, Response, parse_message


def _port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _req(method: str, uri: str, via: str, call_id: str, extra: str = "") -> str:
    return (
        f"{method} {uri} SIP/2.0\r\nVia: {via};branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:caller@callward.local>;tag=a1\r\n"
        f"To: <sip:alice@callward.local>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    )


def _answer(req: Request) -> str:
    lines = ["SIP/2.0 200 OK"]
    for name, value in req.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route"):
            lines.append(f"{name}: {value}")
        elif name == "To":
            lines.append(f"To: {value};tag=ws1")
    return "\r\n".join([*lines, "Content-Length: 0", "", ""])


async def test_register_over_ws_and_receive_call_from_udp() -> None:
    ws_port, udp_port = _port(), _port(socket.SOCK_DGRAM)
    cfg = CallwardConfig(
        edge=EdgeConfig(listen=[f"udp:127.0.0.1:{udp_port}", f"ws:127.0.0.1:{ws_port}"], auth=False)
    )
    node = EdgeNode(cfg)
    await node.start()
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[bytes] = asyncio.Queue()

    class Caller(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:
            inbox.put_nowait(data)

    udp, _ = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    caller_port = udp.get_extra_info("sockname")[1]
    try:
        async with connect(f"ws://127.0.0.1:{ws_port}", subprotocols=["sip"]) as ws:
            contact = "Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\nExpires: 300\r\n"
            await ws.send(_req("REGISTER", "sip:callward.local", "SIP/2.0/WS df7jal23ls0d.invalid",
                               "wsreg", contact))  # fmt: skip
            ok = parse_message((await asyncio.wait_for(ws.recv(), 5)).encode())
            assert isinstance(ok, Response) and ok.status == 200
            udp.sendto(
                _req("INVITE", "sip:alice@callward.local",
                     f"SIP/2.0/UDP 127.0.0.1:{caller_port};rport", "wscall").encode(),
                ("127.0.0.1", udp_port),
            )  # fmt: skip
            inv = parse_message((await asyncio.wait_for(ws.recv(), 5)).encode())
            assert isinstance(inv, Request) and inv.method == "INVITE"
            assert inv.vias[0].transport == "WS"  # bridged UDP → WS over alice's flow
            assert str(inv.uri) == "sip:alice@df7jal23ls0d.invalid;transport=ws"
            await ws.send(_answer(inv))
            while True:
                resp = parse_message(await asyncio.wait_for(inbox.get(), 5))
                if isinstance(resp, Response) and resp.status >= 200:
                    break
            assert resp.status == 200
    finally:
        udp.close()
        await node.stop()
