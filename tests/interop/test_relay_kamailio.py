"""Kamailio 5.6 drives `callward relay` through its own `rtpengine` module (ng protocol):
SIPp uac plays a G.711 pcap, SIPp uas echoes it (-rtp_echo), and tshark sees the SDP that
Kamailio forwarded rewritten by the relay (origin, connection, ports in the relay's range)
and both directions of every call anchored through the relay's ports. The CDRs the relay
wrote carry per-leg packet counts equal to what tshark counted into the relay's ports."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from callward.records.rows import CdrQuery
from callward.records.service import open_records
from peers import (
    callward_relay,
    free_port,
    kamailio_media_proxy,
    sipp_client_cmd,
    sipp_pcap_dir,
    sipp_uas,
    tshark_capture,
    tshark_rtp_streams,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
CALLS = 3
RANGE = (44000, 44199)


def _sdp_per_message(capture: Path, sip_ports: list[int]) -> list[tuple[int, int, str, str, int]]:
    """(src port, dst port, Call-ID, o= line, m= port) for every SIP message with SDP."""
    decode = [a for p in sip_ports for a in ("-d", f"udp.port=={p},sip")]
    out = subprocess.run(
        ["tshark", "-r", str(capture), "-n", *decode, "-Y", "sdp", "-T", "fields",
         "-E", "separator=|", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "sip.Call-ID",
         "-e", "sdp.owner", "-e", "sdp.media.port"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        src, dst, cid, owner, port = line.split("|")
        rows.append((int(src), int(dst), cid, owner, int(port.split(",")[0])))
    return rows


def test_kamailio_rtpengine_module_drives_callward_relay(tmp_path: Path) -> None:
    for tool in ("kamailio", "sipp", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    if not Path("/usr/share/sip-tester/g711a.pcap").exists():
        pytest.skip("why: SIPp's g711a.pcap is not installed")
    ng, kam, uas, uas_media, uac = (free_port((10000, 40000)) for _ in range(5))
    sipp_pcap_dir(tmp_path)
    capture = tmp_path / "relay.pcap"
    with (
        callward_relay(tmp_path, ng, RANGE) as relay,
        kamailio_media_proxy(tmp_path, kam, uas, ng),
        sipp_uas(tmp_path, uas, extra=["-mp", str(uas_media), "-rtp_echo"]),
    ):
        with tshark_capture(capture, [kam, uas, *range(RANGE[0], RANGE[1] + 1)]):
            cmd = sipp_client_cmd(kam, calls=CALLS, rate=CALLS, scenario=("-sn", "uac_pcap"),
                                  extra=["-mp", str(uac)])  # fmt: skip
            res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=90)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-1000:]
        relay.terminate()
        relay.wait(20)
    sdps = _sdp_per_message(capture, [kam, uas])
    calls: dict[str, dict[str, int]] = defaultdict(dict)
    for src, dst, cid, owner, port in sdps:
        if dst == uas:  # INVITE forwarded by Kamailio: rewritten by the relay
            assert owner.startswith("callward ") and RANGE[0] <= port <= RANGE[1], owner
            calls[cid]["b"] = port
        elif src == kam:  # 200 OK forwarded to the uac
            assert owner.startswith("callward ") and RANGE[0] <= port <= RANGE[1], owner
            calls[cid]["a"] = port
    assert len(calls) == CALLS and all(set(v) == {"a", "b"} for v in calls.values())
    streams = tshark_rtp_streams(capture, "--enable-heuristic", "rtp_udp")
    into: dict[int, int] = defaultdict(int)  # packets received on each relay port
    out_of: dict[int, int] = defaultdict(int)
    for (_, sport, _, dport, _), (packets, *_) in streams.items():
        if RANGE[0] <= dport <= RANGE[1]:
            into[dport] += packets
        if RANGE[0] <= sport <= RANGE[1]:
            out_of[sport] += packets
    rec = open_records(tmp_path / "var")
    try:
        cdrs = {c.call_id: c for c in rec.store.query(CdrQuery())}
    finally:
        rec.close()
    assert set(cdrs) == set(calls)
    for cid, ports in calls.items():
        legs = {lg.leg: lg for lg in cdrs[cid].legs}
        # leg a: what the uac sent to the relay port in its answer; leg b: the uas's echo
        assert legs["a"].packets == into[ports["a"]] > 200
        assert legs["b"].packets == into[ports["b"]] > 200
        # and the relay sent every packet on: out of the other leg's port
        assert out_of[ports["b"]] == into[ports["a"]]
        assert out_of[ports["a"]] == into[ports["b"]]
        assert cdrs[cid].disposition == "answered" and legs["a"].lost == 0
