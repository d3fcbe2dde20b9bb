"""Idle signalling bytes per hour of a registered phone, measured on the wire (issue 12).

A phone registers with the registration manager and then sits idle; its keep-alives run at a
short interval so a few seconds give many samples. tshark captures the loopback traffic of
the phone's SIP port; the IP bytes of keep-alive packets (everything but the REGISTER
exchange) divided by the keep-alives sent give the cost of one keep-alive on the wire, which
times 3600 / interval is the idle cost per hour at the interval the sizer chose. Next to it:
the usage planner's prediction (``callward.usage.planner.plan_keepalive``).

- CRLF over TCP to a real in-process callward edge (RFC 5626 §4.4.1: CRLFCRLF ping, CRLF pong);
- STUN over UDP to a registrar that answers Binding requests on its SIP port (§4.4.2).

    python benchmarks/keepalive_idle.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from callward.nat.stun import binding_success, is_stun
from callward.sip.message import Request, make_response
from callward.sip.parser import parse_message
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent, keepalive_policy
from callward.usage.planner import plan_keepalive
from peers import free_port, stop

REALM = "callward.local"


class _Registrar(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if is_stun(data):
            reply = binding_success(data, addr)
        else:
            msg = parse_message(data)
            reply = None
            if isinstance(msg, Request):
                extra = [("Contact", msg.headers.get("Contact") or ""), ("Require", "outbound")]
                reply = bytes(make_response(msg, 200, extra=extra))
        if reply:
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]


def _capture(path: Path, port: int, proto: str) -> subprocess.Popen[bytes]:
    log = path.with_suffix(".log")
    with log.open("w") as err:
        proc = subprocess.Popen(
            ["tshark", "-i", "lo", "-f", f"{proto} port {port}", "-w", str(path), "-a",
             "duration:120"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while "Capturing on" not in log.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"tshark did not start: {log.read_text()}")
        time.sleep(0.05)
    time.sleep(0.3)
    return proc


def _ip_bytes(path: Path, exclude_sip: bool) -> tuple[int, int]:
    """(packets, IP bytes) in the capture, without the REGISTER exchange."""
    flt = "not sip" if exclude_sip else ""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-Y", flt or "ip", "-T", "fields", "-e", "ip.len",
         "-e", "tcp.len", "-e", "udp.length", "-e", "frame.protocols"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    packets = total = 0
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) < 4 or not f[0]:
            continue
        if "sip" in f[3]:
            continue  # REGISTER/200 (tshark sees SIP on TCP payloads too)
        packets += 1
        total += int(f[0])
    return packets, total


async def _run(transport: str, seconds: float, work: Path) -> dict[str, object]:
    interval = 1.0
    edge = None
    if transport == "tcp":
        from callward.config import CallwardConfig, EdgeConfig
        from callward.edge.app import EdgeNode

        port = free_port()
        listen = [f"tcp:127.0.0.1:{port}"]
        edge_cfg = EdgeConfig(listen=listen, realm=REALM, domains=[REALM], auth=False)
        cfg = CallwardConfig(edge=edge_cfg)
        edge = EdgeNode(cfg)
        await edge.start()
        registrar = ("127.0.0.1", port)
    else:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            _Registrar, local_addr=("127.0.0.1", 0), family=socket.AF_INET
        )
        registrar = udp.get_extra_info("sockname")[:2]
    cap = work / f"ka-{transport}.pcap"
    tshark = _capture(cap, registrar[1], transport)
    phone = await Phone.start("idle", transport=transport)
    try:
        policy = keepalive_policy(
            transport, initial_interval=interval, min_interval=1.0, learn=False
        )
        agent = await RegistrationAgent.start(
            phone,
            [registrar],
            domain=REALM,
            expires=3600,
            keepalive=policy,
            ka_timeout=1.0,
            instance="urn:uuid:00000000-0000-4000-8000-000000001d1e",
        )
        await agent.wait_registered(5)
        await asyncio.sleep(seconds)
        sent = agent.keepalives_sent
        agent.close()
        phone.registration = None
    finally:
        await phone.close()
        if edge is not None:
            await edge.stop()
        else:
            udp.close()
        time.sleep(0.5)
        stop(tshark, 2)
    packets, ip_bytes = _ip_bytes(cap, True)
    if transport == "tcp":
        packets, ip_bytes = _tcp_keepalive_bytes(cap)
    per = ip_bytes / max(1, sent)
    method = "crlf" if transport == "tcp" else "stun"
    default = 120.0 if method == "crlf" else 29.0  # RFC 5626 §4.4.1 defaults
    return {
        "transport": transport,
        "method": method,
        "keepalives": sent,
        "packets_per_keepalive": round(packets / max(1, sent), 2),
        "ip_bytes_per_keepalive": round(per, 1),
        "interval_s": default,
        "bytes_per_hour_measured": round(per * 3600 / default),
        "bytes_per_hour_planner": round(plan_keepalive(method, int(default)).bytes_per_hour),
    }


def _tcp_keepalive_bytes(cap: Path) -> tuple[int, int]:
    """TCP packets after the REGISTER exchange: pings, pongs and their ACKs (the handshake
    and the REGISTER/200 segments are dropped by position: everything up to the 200 OK)."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(cap), "-T", "fields", "-e", "ip.len", "-e", "tcp.len",
         "-e", "tcp.flags.fin", "-e", "frame.protocols"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    rows = [line.split("\t") for line in out if line]
    last_sip = max((i for i, r in enumerate(rows) if "sip" in r[3]), default=-1)
    packets = total = 0
    for r in rows[last_sip + 2 :]:  # skip the ACK of the 200 OK
        if r[2] == "1":
            break  # teardown: the unregister and FIN are not idle cost
        if "sip" in r[3]:
            break
        packets += 1
        total += int(r[0])
    return packets, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    if shutil.which("tshark") is None:
        sys.exit("tshark is needed to measure on the wire")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in ("udp", "tcp"):
            print(json.dumps(asyncio.run(_run(transport, args.seconds, Path(tmp)))))


if __name__ == "__main__":
    main()
