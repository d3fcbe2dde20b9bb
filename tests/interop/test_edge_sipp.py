"""callward edge against real peers: SIPp uac → edge → SIPp uas (UDP, TCP, UDP→TCP), a SIPp
REGISTER scenario with digest, and sipsak OPTIONS / REGISTER. Zero failed calls expected."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from peers import add_subscriber, callward_edge, free_port, run_sipp, sipp_client_cmd, sipp_uas

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).parent / "scenarios"
SIPSAK_PORTS = (5100, 9900)  # sipsak truncates 5-digit ports


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"why: {tool} not installed")


@pytest.mark.parametrize(
    ("uac_t", "uas_t", "route_suffix"),
    [("u1", "u1", ""), ("t1", "t1", ";transport=tcp"), ("u1", "t1", ";transport=tcp")],
    ids=["udp", "tcp", "udp-to-tcp"],
)
def test_sipp_calls_through_edge(tmp_path: Path, uac_t: str, uas_t: str, route_suffix: str) -> None:
    _need("sipp")
    uas, port = free_port(SIPSAK_PORTS), free_port(SIPSAK_PORTS)
    with (
        sipp_uas(tmp_path, uas, transport=uas_t),
        callward_edge(
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
        stats = tmp_path / f"uac-{port}-{uac_t}.csv"
        cmd = sipp_client_cmd(port, calls=100, rate=50, transport=uac_t, timeout="40s", stats=stats)
        result = run_sipp(cmd, tmp_path, stats, calls=100, timeout=60)
    assert (result.rc, result.ok, result.failed) == (0, 100, 0)


def _register(
    work: Path,
    port: int,
    password: str,
    *,
    calls: int,
    rate: int | None = None,
    transport: str = "u1",
) -> subprocess.CompletedProcess[bytes]:
    """SIPp's REGISTER scenario with digest credentials for alice (a single wrong-password
    attempt gives up after 10 s; a full run after 30 s)."""
    cmd = sipp_client_cmd(
        port,
        calls=calls,
        rate=rate,
        scenario=("-sf", str(SCENARIOS / "edge_register.xml")),
        service="alice",
        transport=transport,
        timeout="30s" if calls > 1 else "10s",
        extra=("-au", "alice", "-ap", password),
    )
    return subprocess.run(cmd, cwd=work, capture_output=True, timeout=60 if calls > 1 else 30)


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_sipp_register_scenario_with_digest(tmp_path: Path, transport: str) -> None:
    _need("sipp")
    db = add_subscriber(tmp_path, "alice", "s3cret")
    port = free_port(SIPSAK_PORTS)
    with callward_edge(
        tmp_path,
        "--listen", f"udp:127.0.0.1:{port}",
        "--listen", f"tcp:127.0.0.1:{port}",
        "--subscribers", db,
    ):  # fmt: skip
        res = _register(tmp_path, port, "s3cret", calls=50, rate=25, transport=transport)
        assert res.returncode == 0, res.stdout[-800:]
        bad = _register(tmp_path, port, "wrong", calls=1)
        assert bad.returncode != 0  # a wrong password never gets a 200


def test_sipsak_options_and_digest_register(tmp_path: Path) -> None:
    _need("sipsak")
    db = add_subscriber(tmp_path, "bob", "pa55word")
    port = free_port(SIPSAK_PORTS)
    with callward_edge(tmp_path, "--listen", f"udp:127.0.0.1:{port}", "--subscribers", db):
        opt = subprocess.run(
            ["sipsak", "-s", f"sip:127.0.0.1:{port}", "-vv"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert opt.returncode == 0 and "SIP/2.0 200 OK" in opt.stdout
        reg = _sipsak_register(port, "pa55word")
        assert reg.returncode == 0, reg.stdout[-500:]
        wrong = _sipsak_register(port, "nope")
        assert wrong.returncode != 0


def _sipsak_register(port: int, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sipsak", "-U", "-i", "-x", "300", "-s", f"sip:bob@127.0.0.1:{port}",
         "-a", password, "-u", "bob"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
