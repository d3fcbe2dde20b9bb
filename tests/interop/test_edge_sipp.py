"""callward edge against real peers: SIPp uac → edge → SIPp uas (UDP, TCP, UDP→TCP), a SIPp
REGISTER scenario with digest, and sipsak OPTIONS / REGISTER. Zero failed calls expected."""

from __future__ import annotations

import contextlib
import csv
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).parent / "scenarios"


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"why: {tool} not installed")


def free_port() -> int:
    """A port free for both UDP and TCP, below 10000 (sipsak truncates 5-digit ports)."""
    for _ in range(200):
        port = random.randint(5100, 9900)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def edge(tmp_path: Path, *args: str, config: str | None = None) -> Iterator[subprocess.Popen]:
    log = tmp_path / f"edge-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-c", "from callward.cli import main; main()", "edge", *args]
    if config is not None:
        cfg = tmp_path / "callward.yaml"
        cfg.write_text(config)
        cmd += ["--config", str(cfg)]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"edge did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def sipp_uas(tmp_path: Path, port: int, transport: str = "u1") -> Iterator[None]:
    proc = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-t", transport, "-nostdin"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    time.sleep(0.3)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_uac(
    tmp_path: Path, target: int, *, transport: str = "u1", calls: int = 100, rate: int = 50
) -> dict[str, int]:
    stats = tmp_path / f"uac-{target}-{transport}.csv"
    res = subprocess.run(
        [
            "sipp",
            "-sn",
            "uac",
            f"127.0.0.1:{target}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-t",
            transport,
            "-s",
            "service",
            "-r",
            str(rate),
            "-m",
            str(calls),
            "-nostdin",
            "-timeout",
            "40s",
            "-trace_stat",
            "-stf",
            str(stats),
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    rows = list(csv.DictReader(stats.read_text().splitlines(), delimiter=";"))
    last = rows[-1]
    return {
        "rc": res.returncode,
        "ok": int(last["SuccessfulCall(C)"]),
        "failed": int(last["FailedCall(C)"]),
    }


@pytest.mark.parametrize(
    ("uac_t", "uas_t", "route_suffix"),
    [("u1", "u1", ""), ("t1", "t1", ";transport=tcp"), ("u1", "t1", ";transport=tcp")],
    ids=["udp", "tcp", "udp-to-tcp"],
)
def test_sipp_calls_through_edge(tmp_path: Path, uac_t: str, uas_t: str, route_suffix: str) -> None:
    _need("sipp")
    uas, port = free_port(), free_port()
    with (
        sipp_uas(tmp_path, uas, uas_t),
        edge(
            tmp_path,
            "--listen",
            f"udp:127.0.0.1:{port}",
            "--listen",
            f"tcp:127.0.0.1:{port}",
            "--no-auth",
            "--route",
            f"service=sip:service@127.0.0.1:{uas}{route_suffix}",
        ),
    ):
        result = run_uac(tmp_path, port, transport=uac_t, calls=100, rate=50)
    assert result == {"rc": 0, "ok": 100, "failed": 0}


def _provision(tmp_path: Path, user: str, password: str) -> str:
    db = f"sqlite:{tmp_path / 'subs.sqlite'}"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from callward.cli import main; main()",
            "edge",
            "add-subscriber",
            user,
            "--password",
            password,
            "--subscribers",
            db,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return db


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_register_scenario_with_digest(tmp_path: Path, transport: str) -> None:
    _need("sipp")
    db = _provision(tmp_path, "alice", "s3cret")
    port = free_port()
    with edge(
        tmp_path,
        "--listen", f"udp:127.0.0.1:{port}",
        "--listen", f"tcp:127.0.0.1:{port}",
        "--subscribers", db,
    ):  # fmt: skip
        res = subprocess.run(
            [
                "sipp",
                "-t",
                transport,
                f"127.0.0.1:{port}",
                "-sf",
                str(SCENARIOS / "edge_register.xml"),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-s",
                "alice",
                "-au",
                "alice",
                "-ap",
                "s3cret",
                "-m",
                "50",
                "-r",
                "25",
                "-nostdin",
                "-timeout",
                "30s",
            ],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stdout[-800:]
        bad = subprocess.run(
            [
                "sipp",
                f"127.0.0.1:{port}",
                "-sf",
                str(SCENARIOS / "edge_register.xml"),
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-s",
                "alice",
                "-au",
                "alice",
                "-ap",
                "wrong",
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "10s",
            ],
            cwd=tmp_path,
            capture_output=True,
            timeout=30,
        )
        assert bad.returncode != 0  # a wrong password never gets a 200


def test_sipsak_options_and_digest_register(tmp_path: Path) -> None:
    _need("sipsak")
    db = _provision(tmp_path, "bob", "pa55word")
    port = free_port()
    with edge(tmp_path, "--listen", f"udp:127.0.0.1:{port}", "--subscribers", db):
        opt = subprocess.run(
            ["sipsak", "-s", f"sip:127.0.0.1:{port}", "-vv"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert opt.returncode == 0 and "SIP/2.0 200 OK" in opt.stdout
        reg = subprocess.run(
            [
                "sipsak",
                "-U",
                "-i",
                "-x",
                "300",
                "-s",
                f"sip:bob@127.0.0.1:{port}",
                "-a",
                "pa55word",
                "-u",
                "bob",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reg.returncode == 0, reg.stdout[-500:]
        wrong = subprocess.run(
            [
                "sipsak",
                "-U",
                "-i",
                "-x",
                "300",
                "-s",
                f"sip:bob@127.0.0.1:{port}",
                "-a",
                "nope",
                "-u",
                "bob",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong.returncode != 0
