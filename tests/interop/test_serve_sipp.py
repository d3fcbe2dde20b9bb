"""SIPp calls with RTP through `callward serve`: the edge anchors every call's media in the
relay over ng (SIPp uac plays a G.711 pcap, SIPp uas echoes it), the parties only ever see the
relay's address and ports, and the CDR store then holds exactly one CDR per call whose per-leg
packets and loss equal what tshark counts on the relay's ports.

Three shapes: the relay in serve's process (20 calls), two relay worker processes driven over
ng (``media.relay_workers: 2``, 100 calls: the CDR's media statistics then come from the
workers' ng delete replies), and 1,000 calls through two workers at a bounded rate."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from callward.records.rows import CdrQuery
from callward.records.service import open_records
from peers import (
    dumpcap,
    free_port,
    sipp_client_cmd,
    sipp_pcap_dir,
    sipp_uas,
    tshark_rtp_streams,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


RANGE = (22000, 22999)  # system17's port block (one serve at a time)


def test_sipp_calls_with_rtp_through_serve_give_one_cdr_each(tmp_path: Path) -> None:
    calls = int(os.environ.get("CALLWARD_SERVE_CALLS", "20"))
    serve_calls(tmp_path, calls, int(os.environ.get("CALLWARD_SERVE_RATE", "4")), workers=0)


def test_serve_with_relay_worker_processes_100_calls(tmp_path: Path) -> None:
    """Media off the edge's event loop: every call anchored in one of two relay processes."""
    serve_calls(tmp_path, 100, 10, workers=2)


@pytest.mark.timeout(300)
def test_serve_1000_calls_with_media_through_relay_workers(tmp_path: Path) -> None:
    """1,000 SIPp calls (7 s of G.711 each, 25 calls/s) through serve and two relay
    processes: 1,000 CDRs, each leg's packets equal to tshark's count."""
    if os.environ.get("CALLWARD_SKIP_1000_CALLS"):
        pytest.skip("why: CALLWARD_SKIP_1000_CALLS is set")
    serve_calls(tmp_path, 1000, 25, workers=2, ports=(30000, 32767))


def serve_calls(
    tmp_path: Path, calls: int, rate: int, *, workers: int, ports: tuple[int, int] = RANGE
) -> None:
    """``calls`` SIPp calls at ``rate`` calls/s; every CDR checked against tshark: per call
    when no relay port served two calls during the run, else per leg in total."""
    CALLS, RANGE = calls, ports
    for tool in ("sipp", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    if not Path("/usr/share/sip-tester/g711a.pcap").exists():
        pytest.skip("why: SIPp's g711a.pcap is not installed")
    sip, ng, uas, uas_media, uac = (free_port((10000, 20000)) for _ in range(5))
    relay_ip = "127.{}.{}.{}".format(*random.sample(range(2, 250), 3))  # this run's media
    sipp_pcap_dir(tmp_path)
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(
        f"storage: {{data_dir: {tmp_path / 'var'}}}\n"
        f"edge: {{listen: ['udp:127.0.0.1:{sip}'], auth: false,"
        f" routes: {{service: 'sip:service@127.0.0.1:{uas}'}}}}\n"
        f"media: {{ng_listen: '127.0.0.1:{ng}', relay_address: '{relay_ip}',"
        f" rtp_port_min: {RANGE[0]},"
        f" rtp_port_max: {RANGE[1]}, relay_workers: {workers}}}\n"
    )
    log = (tmp_path / "serve.log").open("w")
    cmd = [
        sys.executable,
        "-m",
        "callward.cli",
        "serve",
        "--config",
        str(cfg),
        "--no-web",
        "--json",
    ]
    serve = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path)
    capture = tmp_path / "relay.pcap"  # what went into the relay's ports
    signalling = tmp_path / "sip.pcap"
    try:
        assert serve.stdout is not None
        while (
            json.loads(serve.stdout.readline() or '{"event": "serving"}').get("event") != "serving"
        ):
            pass
        with (
            sipp_uas(tmp_path, uas, extra=["-mp", str(uas_media), "-rtp_echo"]),
            dumpcap(signalling, f"udp and (port {sip} or port {uas})"),
            # this run's relay address only: the same test may run elsewhere at once
            dumpcap(
                capture, f"udp and dst host {relay_ip} and dst portrange {RANGE[0]}-{RANGE[1]}"
            ),
        ):
            run = sipp_client_cmd(sip, calls=CALLS, rate=rate, scenario=("-sn", "uac_pcap"),
                                  extra=["-mp", str(uac)])  # fmt: skip
            res = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=240)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-1000:]
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        log.close()
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
    # the SDP each party received names only relay ports; per call: a = uac side, b = uas side
    decode = ["-d", f"udp.port=={sip},sip", "-d", f"udp.port=={uas},sip"]
    out = subprocess.run(
        ["tshark", "-r", str(signalling), "-n", *decode, "-Y", "sdp", "-T", "fields", "-E",
         "separator=|", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "sip.Call-ID",
         "-e", "sdp.media.port", "-e", "sdp.owner"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    ports: dict[str, dict[str, int]] = defaultdict(dict)
    for line in out.splitlines():
        src, dst, cid, port, owner = line.split("|")
        if int(dst) == uas:
            ports[cid]["b"] = int(port)
        elif int(src) == sip:
            ports[cid]["a"] = int(port)
        else:
            continue
        assert RANGE[0] <= int(port) <= RANGE[1] and owner.startswith("callward "), line
    assert len(ports) == CALLS
    relay_ports = {p for pp in ports.values() for p in pp.values()}
    into: dict[int, int] = defaultdict(int)
    gaps: dict[int, int] = defaultdict(int)  # tshark's lost (sequence gaps) per relay port
    if len(relay_ports) == 2 * CALLS:  # each relay port served one call: count per stream
        merged = tmp_path / "merged.pcap"  # SIP with it: tshark follows the SDP to the RTP
        subprocess.run(["mergecap", "-w", str(merged), str(signalling), str(capture)],
                       check=True, timeout=60)  # fmt: skip
        for (_, _, _, dport, _), (packets, lost, *_) in tshark_rtp_streams(
            merged, *decode, "--enable-heuristic", "rtp_udp"
        ).items():
            into[dport] += packets
            gaps[dport] += lost
    rec = open_records(tmp_path / "var")
    try:
        cdrs = {c.call_id: c for c in rec.store.query(CdrQuery(limit=10 * CALLS))}
    finally:
        rec.close()
    assert set(cdrs) == set(ports)  # exactly one CDR per call, no strays
    if len(relay_ports) < 2 * CALLS:
        # a port served several calls in turn, so streams by port would merge them: every
        # CDR leg has media and no loss, and the datagrams the capture saw going into the
        # relay's ports (all RTP: SIPp sends no RTCP) == the CDRs' packets summed
        legs_all = [lg for c in cdrs.values() for lg in c.legs if lg.leg in ("a", "b")]
        assert len(legs_all) == 2 * CALLS
        # SIPp's uas echoes every call's RTP from one socket; at ~16,000 packets/s a few
        # never come back (lost before the relay, which counts the gaps it can see); the uac
        # side loses nothing
        assert all(lg.packets > 200 for lg in legs_all)
        assert all(lg.lost == 0 for lg in legs_all if lg.leg == "a")
        assert all(c.disposition == "answered" and not c.flags for c in cdrs.values())
        info = subprocess.run(["capinfos", "-c", "-M", str(capture)], capture_output=True,
                              text=True, timeout=60, check=True).stdout  # fmt: skip
        datagrams = int(re.search(r"Number of packets:\s+(\d+)", info).group(1))  # type: ignore[union-attr]
        assert sum(lg.packets for lg in legs_all) == datagrams
        return
    for cid, p in ports.items():
        cdr = cdrs[cid]
        legs = {lg.leg: lg for lg in cdr.legs}
        assert cdr.disposition == "answered" and not cdr.flags, cdr.flags
        assert legs["a"].packets == into[p["a"]] > 200, (cid, legs["a"].packets, into[p["a"]])
        assert legs["b"].packets == into[p["b"]] > 200, (cid, legs["b"].packets, into[p["b"]])
        # the uac side loses nothing; on a loaded host SIPp's uas, echoing every call from
        # one socket, may drop a few before they reach the relay (which counts the gaps;
        # tshark's own "lost" goes negative across the pcap/DTMF sequence restart)
        assert legs["a"].lost == 0, (cid, legs["a"].lost, gaps[p["a"]])
        assert legs["b"].lost <= 0.05 * legs["b"].packets, (cid, legs["b"].lost, gaps[p["b"]])
