"""The trust boundary on real sockets: a SIPp UAC whose INVITE carries an MSISDN (From,
Contact, P-Asserted-Identity, Call-Info), an IMEI (+sip.instance), a cell id
(P-Access-Network-Info) and an IMSI (X- header) calls through ``callward edge`` to a SIPp UAS
listed in ``edge.untrusted``. SIPp's own message trace of the UAS shows what crossed the
boundary: none of those identifiers, while the call completes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from peers import callward_edge, free_port, run_sipp, sipp_client_cmd, sipp_uas

pytestmark = pytest.mark.interop

SCENARIO = Path(__file__).parent / "scenarios" / "uac_identity.xml"
PORTS = (28000, 28999)  # gov13's block
SECRETS = ("447700900123", "234150999999999", "35209900", "2341500A2B3C4D5E")


def _call(tmp_path: Path, boundary: str) -> tuple[str, str]:
    if shutil.which("sipp") is None:
        pytest.skip("why: sipp not installed")
    uas, port = free_port(PORTS), free_port(PORTS)
    uas_log, uac_log = tmp_path / f"uas-{boundary}.log", tmp_path / f"uac-{boundary}.log"
    config = (f"edge:\n  untrusted: ['127.0.0.1:{uas}']\n"
              f"  subscribers: 'sqlite:{tmp_path / 'subs.sqlite'}'\n"
              f"privacy:\n  boundary: {boundary}\n")  # fmt: skip
    with (
        sipp_uas(tmp_path, uas, extra=["-trace_msg", "-message_file", str(uas_log)]),
        callward_edge(
            tmp_path,
            "--listen",
            f"udp:127.0.0.1:{port}",
            "--no-auth",
            "--route",
            f"service=sip:service@127.0.0.1:{uas}",
            config=config,
        ),  # fmt: skip
    ):
        stats = tmp_path / f"stats-{boundary}.csv"
        cmd = sipp_client_cmd(port, calls=1, scenario=("-sf", str(SCENARIO)), timeout="20s",
                              stats=stats, extra=("-trace_msg", "-message_file", str(uac_log)))  # fmt: skip
        result = run_sipp(cmd, tmp_path, stats, calls=1, timeout=40)
    assert (result.rc, result.ok, result.failed) == (0, 1, 0), result.output[-2000:]
    return uac_log.read_text(errors="replace"), uas_log.read_text(errors="replace")


def test_identities_do_not_cross_to_an_untrusted_peer(tmp_path: Path) -> None:
    sent, received = _call(tmp_path, "strip")
    assert "INVITE" in received and "BYE" in received
    for secret in SECRETS:
        assert secret in sent, secret  # the caller did expose it ...
        assert secret not in received, secret  # ... and the untrusted side never saw it
    for header in ("P-Asserted-Identity", "P-Access-Network-Info", "X-IMSI", "Call-Info"):
        assert f"\n{header}:" not in received
    assert "anonymous@anonymous.invalid" in received


def test_with_the_boundary_off_the_peer_sees_them(tmp_path: Path) -> None:
    _, received = _call(tmp_path, "off")
    assert "234150999999999" in received  # the X- header passes: the test can fail
