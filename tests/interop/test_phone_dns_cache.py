"""``callward phone call --proxy sip:acme.test``: the proxy is found by RFC 3263 (NAPTR, SRV,
A/AAAA) from a real DNS server on loopback (dnspython's wire format, answering a tiny zone and
counting questions), through the phone's coherent cache, which the next run finds again in
the encrypted keystore: the second call asks the resolver nothing. The keystore holds no
server name in the clear."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from peers import CALLWARD_CLI, free_port, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
PORTS = (26000, 26999)  # identity14's block (notes/COORD.md)


class DnsServer:
    """Authoritative answers for ``acme.test`` on 127.0.0.1 (a thread), counting questions."""

    def __init__(self, sip_port: int) -> None:
        self.zone = {
            ("acme.test.", "NAPTR"): ['10 10 "S" "SIP+D2U" "" _sip._udp.acme.test.'],
            ("_sip._udp.acme.test.", "SRV"): [f"0 5 {sip_port} edge.acme.test."],
            ("edge.acme.test.", "A"): ["127.0.0.1"],
            ("edge.acme.test.", "AAAA"): [],
        }
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_port(PORTS)))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.questions: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            resp = dns.message.make_response(query)
            resp.flags |= dns.flags.AA
            q = query.question[0]
            key = (q.name.to_text(), dns.rdatatype.to_text(q.rdtype))
            self.questions.append(key)
            if self.zone.get(key):
                resp.answer.append(dns.rrset.from_text(q.name, 600, "IN", key[1], *self.zone[key]))
            else:
                if key[0] not in {n for n, _ in self.zone}:
                    resp.set_rcode(dns.rcode.NXDOMAIN)
                resp.authority.append(dns.rrset.from_text(
                    "acme.test.", 600, "IN", "SOA", "ns.acme.test. h.acme.test. 1 60 60 600 600"
                ))  # fmt: skip
            self.sock.sendto(resp.to_wire(), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def answering(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen]]:
    port = free_port(PORTS)
    log = tmp_path / "bob.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [*CALLWARD_CLI, "phone", "answer", "--listen", f"127.0.0.1:{port}", "--user", "bob",
             "--calls", "2", "--timeout", "90", "--json"],
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while "answering on" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-500:]
        time.sleep(0.1)
    yield port, log, proc
    stop(proc)


def test_proxy_found_by_rfc3263_and_cached_across_runs(
    tmp_path: Path, answering: tuple[int, Path, subprocess.Popen]
) -> None:
    port, log, proc = answering
    server = DnsServer(port)
    keystore = tmp_path / "keystore"
    env = {**os.environ, "CALLWARD_KEYSTORE_PASSPHRASE": "device passphrase"}
    cmd = [*CALLWARD_CLI, "phone", "call", f"sip:bob@127.0.0.1:{port}", "--user", "alice",
           "--proxy", "sip:acme.test", "--dns-server", f"127.0.0.1:{server.port}",
           "--keystore", str(keystore), "--seconds", "0.2", "--timeout", "20", "--json"]  # fmt: skip
    try:
        first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert first.returncode == 0, first.stderr
        out = json.loads(first.stdout)
        assert out["status"] == 200 and out["dns_lookups"] == 4
        assert sorted(server.questions) == sorted([
            ("acme.test.", "NAPTR"), ("_sip._udp.acme.test.", "SRV"),
            ("edge.acme.test.", "A"), ("edge.acme.test.", "AAAA"),
        ])  # fmt: skip

        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert second.returncode == 0, second.stderr
        out = json.loads(second.stdout)
        assert out["status"] == 200 and out["dns_lookups"] == 0 and out["dns_cache_hits"] >= 4
        assert len(server.questions) == 4  # the resolver heard nothing the second time

        for f in keystore.iterdir():  # sealed: no server name, no address in the clear
            blob = f.read_bytes()
            assert b"acme" not in blob and b"127.0.0.1" not in blob, f.name
        # a wrong passphrase opens nothing (an auth failure: exit 1, one line)
        bad = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                             env={**env, "CALLWARD_KEYSTORE_PASSPHRASE": "wrong"})  # fmt: skip
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    finally:
        server.close()
    proc.wait(30)
    assert [a["status"] for a in json.loads(log.read_text().split("\n", 1)[1])["answered"]] == [
        200,
        200,
    ]
