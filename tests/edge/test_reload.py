"""SIGHUP reloads `callward edge`'s configuration: a changed static route applies to the next
call without restarting the process (and without losing its socket)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from peers import callward_edge


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def _invite(call_id: str, port: int) -> bytes:
    return (
        f"INVITE sip:bob@callward.local SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@elsewhere.example>;tag=1\r\n"
        f"To: <sip:bob@callward.local>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def _config(path: Path, edge_port: int, uas_port: int) -> None:
    path.write_text(
        "edge:\n"
        f"  listen: ['udp:127.0.0.1:{edge_port}']\n"
        "  auth: false\n"
        f"  routes: {{bob: 'sip:bob@127.0.0.1:{uas_port}'}}\n"
    )


def test_sighup_switches_static_route(tmp_path: Path) -> None:
    uas1, uas2, caller = _udp(), _udp(), _udp()
    probe = _udp()
    edge_port = probe.getsockname()[1]
    probe.close()
    cfg = tmp_path / "callward.yaml"
    _config(cfg, edge_port, uas1.getsockname()[1])
    try:
        with callward_edge(tmp_path, "-c", str(cfg)) as proc:
            cport = caller.getsockname()[1]
            caller.sendto(_invite("hup-a", cport), ("127.0.0.1", edge_port))
            assert b"INVITE sip:bob@127.0.0.1" in uas1.recv(65535)
            _config(cfg, edge_port, uas2.getsockname()[1])
            proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            caller.sendto(_invite("hup-b", cport), ("127.0.0.1", edge_port))
            data = uas2.recv(65535)
            assert b"Call-ID: hup-b" in data and proc.poll() is None
    finally:
        for s in (uas1, uas2, caller):
            s.close()
