"""HEPv3 from a real Kamailio (siptrace module) decoded by our HepReceiver.

Kamailio's encoder is the independent reference: the SIP message we send it must come back
byte for byte inside the HEP payload chunk, with addresses, ports and capture id intact.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from callward.quality.hep import HepMessage, HepReceiver
from peers import free_port

pytestmark = pytest.mark.interop
MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


async def test_kamailio_siptrace_hep3(tmp_path: Path) -> None:
    if shutil.which("kamailio") is None or not os.path.isdir(MODULES):
        pytest.skip("why: kamailio not installed")
    sip_port, hep_port = free_port(), free_port()
    cfg = tmp_path / "k.cfg"
    cfg.write_text(
        f"""#!KAMAILIO
debug=1
log_stderror=no
children=1
listen=udp:127.0.0.1:{sip_port}
mpath="{MODULES}"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "siptrace.so"
modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{hep_port}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "hep_capture_id", 1234)
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
request_route {{
    sip_trace();
    sl_send_reply("200", "OK");
}}
"""
    )
    got: list[HepMessage] = []
    transport, proto = await HepReceiver.listen("127.0.0.1", hep_port, got.append)
    pidfile = tmp_path / "k.pid"
    subprocess.run(
        ["kamailio", "-f", str(cfg), "-P", str(pidfile), "-m", "32", "-M", "8", "-w", str(tmp_path)],
        check=True, timeout=20, capture_output=True,
    )  # fmt: skip
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.bind(("127.0.0.1", 0))
        my_port = tx.getsockname()[1]
        msg = (
            f"OPTIONS sip:probe@127.0.0.1:{sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{my_port};branch=z9hG4bKcw1\r\n"
            "From: <sip:cw@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
            "Call-ID: hep-interop-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            tx.sendto(msg, ("127.0.0.1", sip_port))  # resend until Kamailio is up
            await asyncio.sleep(0.3)
        assert got, "no HEP from kamailio"
        h = got[0]
        assert h.payload == msg
        assert (h.src, h.sport, h.dst, h.dport) == ("127.0.0.1", my_port, "127.0.0.1", sip_port)
        assert h.capture_id == 1234 and h.proto_type == 1
        assert abs(h.ts_ns / 1e9 - time.time()) < 60
        assert proto.errors == 0
    finally:
        tx.close()
        transport.close()
        if pidfile.exists():
            pid = int(pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
