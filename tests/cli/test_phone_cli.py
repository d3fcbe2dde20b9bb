"""``callward phone`` against real peers: SIPp's built-in uas answers our call, SIPp's uac calls
our answering phone, and two CLI phones call each other. SIPp's own statistics are the judge."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peers import (
    add_subscriber,
    callward_edge,
    free_port,
    sipp_client_cmd,
    sipp_counts,
    sipp_uas,
    stop,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

SIPP = shutil.which("sipp")
CLI = [sys.executable, "-m", "callward.cli", "phone"]
REALM = "callward.local"


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "call", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def need_sipp() -> None:
    if SIPP is None:
        pytest.skip("why: sipp (Debian sip-tester) not installed")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_call_sipp_uas(tmp_path: Path, need_sipp: None, transport: str) -> None:
    port = free_port()
    extra = ("-m", "1", "-trace_stat", "-stf", "stats.csv", "-fd", "1", "-timeout", "30s")
    with sipp_uas(
        tmp_path, port, transport="u1" if transport == "udp" else "t1", extra=extra
    ) as uas:
        # SIPp's uas pauses after the BYE and counts a TCP close during the pause as a failure.
        linger = "0" if transport == "udp" else "5"
        proc = _run(
            f"sip:service@127.0.0.1:{port}",
            *("--transport", transport, "--seconds", "1", "--linger", linger, "--json"),
        )
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["status"] == 200 and doc["bye_status"] == 200
        assert doc["rtp"]["packets_sent"] == 50
        uas.wait(timeout=30)  # -m 1: SIPp exits once its one call is complete
    counts = sipp_counts(tmp_path / "stats.csv")
    assert counts == (1, 0), counts


def test_answer_sipp_uac(tmp_path: Path, need_sipp: None) -> None:
    port = free_port()
    answering = subprocess.Popen(
        [
            *CLI,
            "answer",
            "--listen",
            f"127.0.0.1:{port}",
            "--calls",
            "3",
            "--timeout",
            "40",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)  # interpreter start + bind
        cmd = sipp_client_cmd(port, calls=3, rate=3)
        client = subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=60, check=False)
        assert client.returncode == 0, client.stdout[-500:]
        out, err = answering.communicate(timeout=60)
    finally:
        stop(answering)
    assert answering.returncode == 0, err
    doc = json.loads(out)
    assert [c["status"] for c in doc["answered"]] == [200, 200, 200]


def test_phone_calls_phone(tmp_path: Path) -> None:
    port = free_port()
    answering = subprocess.Popen(
        [
            *CLI,
            "answer",
            "--listen",
            f"127.0.0.1:{port}",
            "--user",
            "bob",
            "--json",
            "--timeout",
            "40",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)
        proc = _run(f"sip:bob@127.0.0.1:{port}", "--user", "alice", "--seconds", "1", "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["status"] == 200 and doc["rtp"]["packets_sent"] == 50
        # the answering phone talks too (party B of the conversation) until the BYE
        assert doc["rtp"]["packets_received"] >= 40
        out, _err = answering.communicate(timeout=40)
    finally:
        stop(answering)
    answered = json.loads(out)
    assert answered["answered"] == [
        {
            "status": 200,
            "end_reason": answered["answered"][0]["end_reason"],
            "media_security": "rtp",
            "rtp": answered["answered"][0]["rtp"],
        }
    ]
    assert answered["answered"][0]["rtp"]["codec"] == "pcmu"
    assert answered["rtp_packets_received"] >= 45  # 50 sent over loopback, first on probation


@pytest.mark.parametrize(
    "args",
    [
        ["call", "http://example.com"],
        ["call", "sip:a@127.0.0.1:5", "--transport", "sctp"],
        ["call", "sip:a@127.0.0.1:5", "--proxy", "nohost"],
        ["answer", "--calls", "0"],
        ["call", "sip:a@127.0.0.1:5", "--codec", "g729"],
        ["call", "sip:a@127.0.0.1:5", "--ptime", "30"],
        ["answer", "--bitrate", "100"],
        ["call", "sip:a@127.0.0.1:5", "--audio", "/nonexistent.wav"],
        ["call", "sip:a@127.0.0.1:5", "--optimise", "--loss", "80"],
        ["call", "112", "--region", "GB"],  # no --emergency-edge
        ["call", "112", "--region", "XX", "--emergency-edge", "127.0.0.1:5"],
        ["call", "sip:a@127.0.0.1:5", "--ice", "--srtp", "dtls"],
        ["call", "sip:a@127.0.0.1:5", "--ice", "--turn", "nocreds"],
        ["answer", "--ice", "--ice-lite"],
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str]) -> None:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) >= 1
    assert "Traceback" not in proc.stderr


def test_unanswered_call_exits_1(tmp_path: Path) -> None:
    port = free_port()  # nobody listens: Timer B fires (shortened by --timeout)
    proc = _run(f"sip:nobody@127.0.0.1:{port}", "--timeout", "3", "--seconds", "0")
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr


def test_answer_registers_with_a_real_edge_and_unregisters_on_exit(tmp_path: Path) -> None:
    """``phone answer --register``: bob registers (digest) with a ``callward edge`` process,
    alice calls ``sip:bob@callward.local`` through the edge and bob answers; bob's exit
    unregisters, so a second call is refused by the edge (404/480) instead of timing out."""
    add_subscriber(tmp_path, "alice", "pw-alice")
    db = add_subscriber(tmp_path, "bob", "pw-bob")
    edge_port, bob_port = free_port(), free_port()
    edge = f"127.0.0.1:{edge_port}"
    with callward_edge(tmp_path, "--listen", f"udp:{edge}", "--subscribers", db):
        answering = subprocess.Popen(
            [*CLI, "answer", "--listen", f"127.0.0.1:{bob_port}", "--user", "bob",
             "--password", "pw-bob", "--register", "--proxy", edge, "--domain", REALM,
             "--json", "--timeout", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            proc = None
            while time.monotonic() < deadline:
                proc = _run(
                    f"sip:bob@{REALM}", "--user", "alice", "--password", "pw-alice",
                    "--proxy", edge, "--register", "--seconds", "0.5", "--json", timeout=40,
                )  # fmt: skip
                if proc.returncode == 0:
                    break
                time.sleep(0.5)  # bob not registered yet
            assert proc is not None and proc.returncode == 0, proc.stderr if proc else ""
            doc = json.loads(proc.stdout)
            assert doc["register_status"] == 200 and doc["status"] == 200
            out, err = answering.communicate(timeout=40)
        finally:
            stop(answering)
        assert answering.returncode == 0, err
        answered = json.loads(out)
        assert answered["registered_flows"] == 1
        assert [c["status"] for c in answered["answered"]] == [200]
        after = _run(
            f"sip:bob@{REALM}", "--user", "alice", "--password", "pw-alice", "--proxy", edge,
            "--seconds", "0", "--json", "--timeout", "10",
        )  # fmt: skip
        assert after.returncode == 1
        assert json.loads(after.stdout)["status"] in (404, 480), "bob unregistered on exit"


@pytest.mark.parametrize("srtp", ["sdes", "dtls"])
def test_phone_calls_phone_with_srtp_and_tshark_sees_it(tmp_path: Path, srtp: str) -> None:
    """``--srtp sdes|dtls`` on both CLI phones: the call is keyed before any packet leaves;
    tshark sees the DTLS handshake (dtls) and RTP-framed packets whose payload is not the
    plain G.711 silence the phone sends."""
    if shutil.which("tshark") is None:
        pytest.skip("why: tshark not installed")
    port = free_port()
    answering = subprocess.Popen(
        [*CLI, "answer", "--listen", f"127.0.0.1:{port}", "--user", "bob", "--json",
         "--timeout", "40", "--srtp", srtp],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    cap = tmp_path / "call.pcap"
    try:
        time.sleep(2.0)
        with _capture_all(cap):
            proc = _run(
                f"sip:bob@127.0.0.1:{port}", "--user", "alice", "--seconds", "1", "--json",
                "--srtp", srtp,
            )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["status"] == 200 and doc["rtp"]["packets_sent"] == 50
        want = {"sdes": "srtp-sdes", "dtls": "dtls-srtp"}[srtp]
        assert doc["media_security"] == want
        out, err = answering.communicate(timeout=40)
    finally:
        stop(answering)
    answered = json.loads(out)
    assert answered["answered"][0]["media_security"] == want, err
    assert answered["rtp_packets_received"] >= 45
    frames = subprocess.run(
        ["tshark", "-n", "-r", str(cap), "-Y", f"udp.port=={_media_port(doc)}", "-T", "fields",
         "-e", "udp.payload"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    payloads = [bytes.fromhex(f) for f in frames if f]
    rtp = [p for p in payloads if len(p) == 12 + 160 + 10 and p[0] >> 6 == 2]
    assert len(rtp) >= 45, "SRTP packets (RTP header + 160 B + 10 B HMAC-SHA1-80 tag)"
    assert not any(b"\xff" * 32 in p for p in rtp), "no plain G.711 silence on the wire"
    if srtp == "dtls":
        names = subprocess.run(
            ["tshark", "-n", "-r", str(cap), "-d", f"udp.port=={_media_port(doc)},dtls",
             "-Y", "dtls.handshake.type", "-T", "fields", "-e", "dtls.handshake.type"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.split()  # fmt: skip
        types = {int(t) for line in names for t in line.split(",") if t.isdigit()}
        assert {1, 2, 11}.issubset(types), f"ClientHello, ServerHello, Certificate: {types}"


def _media_port(doc: dict[str, object]) -> int:
    port = doc.get("media_port")
    assert isinstance(port, int), doc
    return port


class _capture_all:
    """tshark on loopback UDP (our ports are ephemeral) for the duration of the block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> None:
        log = self.path.with_suffix(".log")
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                ["tshark", "-i", "lo", "-f", "udp", "-w", str(self.path), "-a", "duration:60"],
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while "Capturing on" not in log.read_text():
            assert time.monotonic() < deadline and self.proc.poll() is None, log.read_text()
            time.sleep(0.05)
        time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        assert self.proc is not None
        stop(self.proc, signal.SIGINT)


async def test_emergency_call_from_the_cli_goes_to_the_emergency_route() -> None:
    """``phone call 999 --region GB --emergency-edge H:P --location URI``: the emergency route
    (a phone standing in for the PSAP) gets ``urn:service:sos`` with the location reference."""
    import asyncio

    from callward.ua.phone import Phone

    psap = await Phone.start("psap", auto_answer=True)
    try:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "call", "999", "--region", "GB", "--emergency-edge",
            f"127.0.0.1:{psap.local_addr[1]}", "--location", "https://lis.example/loc/1",
            "--seconds", "0.2", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 40)
    finally:
        await psap.close()
    assert proc.returncode == 0, err.decode()[-400:]
    assert json.loads(out)["status"] == 200
    (call,) = psap.calls.values()
    assert call.leg.invite is not None and str(call.leg.invite.uri) == "urn:service:sos"
    assert call.leg.invite.headers.get("Geolocation") == "<https://lis.example/loc/1>"
    assert b"lis.example" not in out + err, "the location is not echoed to the terminal"
