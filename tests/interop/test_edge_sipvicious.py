"""sipvicious against ``callward edge`` with its default security (auth on): svcrack with a
dictionary that holds the password finds nothing and is locked out within a few attempts,
svwar enumerates no extension, svmap raises a SecurityAlert. Loopback only, every run bounded.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from peers import add_subscriber, callward_edge, free_port, metric

pytestmark = pytest.mark.interop

PASSWORD = "Tr0ub4dor-9"
LOCKED_OUT_WITHIN = 11  # REGISTERs the edge processes before the cracker is silenced


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"why: {tool} (sipvicious) not installed")


def _edge(tmp_path: Path, port: int, metrics: int, db: str):  # type: ignore[no-untyped-def]
    return callward_edge(
        tmp_path,
        "--listen", f"udp:127.0.0.1:{port}",
        "--subscribers", db,
        "--metrics", f"127.0.0.1:{metrics}",
    )  # fmt: skip


def _alerts(metrics: int, rule: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    return metric(text, f'callward_edge_security_alerts_total{{rule="{rule}"}}')


def _run(cmd: list[str], timeout: float = 60) -> str:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


def test_svcrack_finds_nothing_and_is_locked_out(tmp_path: Path) -> None:
    _need("svcrack")
    port, metrics = free_port((10000, 60000)), free_port((10000, 60000))
    db = add_subscriber(tmp_path, "100", PASSWORD)
    words = [f"guess{i:02d}" for i in range(40)]
    words.insert(20, PASSWORD)  # the dictionary holds the password
    wordlist = tmp_path / "words.txt"
    wordlist.write_text("\n".join(words) + "\n")
    with _edge(tmp_path, port, metrics, db):
        out = _run(
            [
                "svcrack",
                "-u",
                "100",
                "-d",
                str(wordlist),
                "127.0.0.1",
                "-p",
                str(port),
                "--timeout",
                "0.5",
            ],
            timeout=120,
        )
        assert PASSWORD not in out, out[-800:]
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        # svcrack announces itself (User-Agent: friendly-scanner): blocked on sight. Without
        # that fingerprint the failed-auth lockout takes over after 5 guesses (proven through
        # the core in tests/edge/test_security.py); either way it is silenced within N tries.
        tried = metric(text, 'callward_edge_requests_total{method="REGISTER"}')
        assert 1 <= tried <= LOCKED_OUT_WITHIN
        alerts = sum(
            metric(text, f'callward_edge_security_alerts_total{{rule="{rule}"}}')
            for rule in ("scanner-user-agent", "account-lockout", "password-guessing")
        )
        assert alerts >= 1


@contextlib.contextmanager
def _disguise(edge_port: int) -> Iterator[int]:
    """A UDP relay in front of the edge that rewrites svcrack's fingerprints (``User-Agent:
    friendly-scanner``, ``Contact: sip:123@1.1.1.1``) into a softphone's, as an attacker who
    edits the tool would: the scanner rules no longer fire, so only the failed-auth lockout
    can stop it."""
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    stop = threading.Event()
    client: list[tuple[str, int]] = []

    def pump() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([front, back], [], [], 0.1)
            for sock in ready:
                data, addr = sock.recvfrom(65536)
                if sock is front:
                    client[:] = [addr]
                    data = data.replace(b"friendly-scanner", b"Zoiper rv2.10.20.3")
                    data = data.replace(b"sip:123@1.1.1.1", b"sip:100@192.0.2.55:5060")
                    back.sendto(data, ("127.0.0.1", edge_port))
                elif client:
                    front.sendto(data, client[0])

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield front.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        front.close()
        back.close()


def test_svcrack_without_its_fingerprint_is_locked_out(tmp_path: Path) -> None:
    _need("svcrack")
    port, metrics = free_port((10000, 60000)), free_port((10000, 60000))
    db = add_subscriber(tmp_path, "100", PASSWORD)
    words = [f"guess{i:02d}" for i in range(40)]
    words.insert(20, PASSWORD)
    wordlist = tmp_path / "words.txt"
    wordlist.write_text("\n".join(words) + "\n")
    # svcrack's Request-URI is sip:127.0.0.1 (port 5060 implied): name that host as one of our
    # domains so the REGISTERs reach authentication (otherwise they are refused, not relayed,
    # before any password is tried)
    edge = callward_edge(
        tmp_path,
        "--listen", f"udp:127.0.0.1:{port}",
        "--subscribers", db,
        "--metrics", f"127.0.0.1:{metrics}",
        config="edge:\n  domains: ['127.0.0.1']\n",
    )  # fmt: skip
    with edge, _disguise(port) as front:
        out = _run(
            ["svcrack", "-u", "100", "-d", str(wordlist), "127.0.0.1", "-p", str(front),
             "--timeout", "0.3", "--maximumtime", "5"],
            timeout=120,
        )  # fmt: skip
        assert PASSWORD not in out, out[-800:]
        assert _alerts(metrics, "scanner-user-agent") == 0  # the disguise worked
        assert _alerts(metrics, "account-lockout") >= 1
        # after source_failures (10) wrong answers the source itself is banned: its further
        # guesses are dropped unanswered, and the account stays locked for everyone else
        assert _alerts(metrics, "password-guessing") >= 1
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert metric(text, 'callward_edge_rejected_total{reason="banned"}') >= 1


def test_svwar_enumerates_nothing(tmp_path: Path) -> None:
    _need("svwar")
    port, metrics = free_port((10000, 60000)), free_port((10000, 60000))
    db = add_subscriber(tmp_path, "105", PASSWORD)
    with _edge(tmp_path, port, metrics, db):
        out = _run(
            [
                "svwar",
                "-m",
                "INVITE",
                "-e100-120",
                "127.0.0.1",
                "-p",
                str(port),
                "--timeout",
                "0.5",
            ],
            timeout=90,
        )
    assert "105" not in out.replace("-e100-120", ""), out[-800:]


def test_svmap_raises_a_security_alert(tmp_path: Path) -> None:
    _need("svmap")
    port, metrics = free_port((10000, 60000)), free_port((10000, 60000))
    db = add_subscriber(tmp_path, "100", PASSWORD)
    with _edge(tmp_path, port, metrics, db):
        _run(["svmap", "127.0.0.1", "-p", str(port), "--timeout", "0.5"], timeout=60)
        assert _alerts(metrics, "scanner-user-agent") >= 1
