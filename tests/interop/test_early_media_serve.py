"""Early media through `callward serve` (RFC 3960): the callee answers 183 Session Progress with
SDP and plays RTP for a second before its 200 OK. The edge anchors the 183's SDP (ng
``answer``), so the caller is told only the relay's address, and the relay forwards the
callee's early RTP to the caller before the call is answered; the 200's SDP (the same
session) changes nothing. tshark is the judge: it sees the 183 naming a relay port, RTP from
that relay port to the caller's media port before the 200 OK, and the CDR counts every packet
the callee sent into the relay."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from callward.records.rows import CdrQuery
from callward.records.service import open_records
from peers import dumpcap, free_port, sipp_client_cmd, sipp_pcap_dir, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "uas_early_media.xml"
RANGE = (22000, 22999)  # system17's port block


def test_183_with_sdp_is_anchored_and_early_media_flows_before_the_answer(
    tmp_path: Path,
) -> None:
    for tool in ("sipp", "tshark", "dumpcap"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    if not Path("/usr/share/sip-tester/g711a.pcap").exists():
        pytest.skip("why: SIPp's g711a.pcap is not installed")
    sip, ng, uas, uas_media, uac_media = (free_port((10000, 20000)) for _ in range(5))
    sipp_pcap_dir(tmp_path)
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(
        f"storage: {{data_dir: {tmp_path / 'var'}}}\n"
        f"edge: {{listen: ['udp:127.0.0.1:{sip}'], auth: false,"
        f" routes: {{service: 'sip:service@127.0.0.1:{uas}'}}}}\n"
        f"media: {{ng_listen: '127.0.0.1:{ng}', rtp_port_min: {RANGE[0]},"
        f" rtp_port_max: {RANGE[1]}}}\n"
    )
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "callward.cli", "serve", "--config", str(cfg), "--no-web",
         "--json"], stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path,
    )  # fmt: skip
    capture = tmp_path / "all.pcap"
    uas_proc = None
    try:
        assert serve.stdout is not None
        for line in serve.stdout:
            if '"serving"' in line:
                break
        with dumpcap(capture, f"udp and (port {sip} or port {uas} or port {uac_media}"
                              f" or portrange {RANGE[0]}-{RANGE[1]})"):  # fmt: skip
            uas_proc = subprocess.Popen(
                ["sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(uas),
                 "-mp", str(uas_media), "-nostdin"],
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            cmd = sipp_client_cmd(sip, calls=3, rate=1,
                                  extra=["-mp", str(uac_media), "-d", "2000"])  # fmt: skip
            res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-1000:]
    finally:
        if uas_proc is not None:
            stop(uas_proc)
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        log.close()
    decode = ["-d", f"udp.port=={sip},sip", "-d", f"udp.port=={uas},sip",
              "-d", f"udp.port=={uac_media},rtp"]  # fmt: skip
    out = subprocess.run(
        ["tshark", "-r", str(capture), "-n", *decode, "-Y", f"udp.srcport=={sip} and sip.Status-Code",
         "-T", "fields", "-E", "separator=|", "-e", "frame.time_epoch", "-e", "sip.Call-ID",
         "-e", "sip.Status-Code", "-e", "sdp.media.port"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    calls: dict[str, dict[str, float | int]] = {}
    for line in out.splitlines():
        t, cid, status, port = line.split("|")
        c = calls.setdefault(cid, {})
        if status == "183":
            assert port and RANGE[0] <= int(port) <= RANGE[1], line  # the relay, not the uas
            c["183"], c["port"] = float(t), int(port)
        elif status == "200" and port:
            c.setdefault("200", float(t))
    assert len(calls) == 3 and all("183" in c and "200" in c for c in calls.values()), calls
    rtp = subprocess.run(
        ["tshark", "-r", str(capture), "-n", *decode, "-Y", f"udp.dstport=={uac_media}",
         "-T", "fields", "-E", "separator=|", "-e", "frame.time_epoch", "-e", "udp.srcport"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    to_caller = [(float(t), int(p)) for t, p in (ln.split("|") for ln in rtp.splitlines())]
    for cid, c in calls.items():
        early = [t for t, p in to_caller if p == c["port"] and c["183"] <= t < c["200"]]
        # about one second of 20 ms packets reached the caller before the 200 OK
        assert len(early) >= 30, (cid, len(early))
    rec = open_records(tmp_path / "var")
    try:
        cdrs = rec.store.query(CdrQuery(call_ids=tuple(calls)))
    finally:
        rec.close()
    assert len(cdrs) == 3
    for cdr in cdrs:
        legs = {lg.leg: lg for lg in cdr.legs}
        assert cdr.disposition == "answered" and legs["b"].packets >= 50  # the callee's RTP
    json.dumps(calls)  # the timings are plain data (debugging aid on failure)
