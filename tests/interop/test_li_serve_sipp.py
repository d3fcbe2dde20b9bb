"""Lawful interception on the real serve path: a SIPp call (uac_pcap -> edge -> relay over ng ->
SIPp uas echoing RTP) through `callward serve`. With a valid warrant on the called number the
mediation endpoint (a loopback TCP listener here) receives IRI (X2 BEGIN/END) and CC (X3 RTP);
with an expired warrant it receives nothing; the CDR access trail shows no trace of either."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.privacy.intercept import Pdu, PduType, iri_record
from callward.privacy.x2x3 import split_pdus
from callward.records.service import open_records
from peers import free_port, sipp_client_cmd, sipp_pcap_dir, sipp_uas

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
TARGET = "+447700900666"


class Mediation:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.data = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.2)
            while not self.stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                self.data += chunk
            conn.close()

    def pdus(self) -> list[Pdu]:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        out, rest = split_pdus(self.data)
        assert rest == b"", "a truncated PDU reached the mediation endpoint"
        return out


def _run_call(tmp_path: Path, valid: bool) -> tuple[list[Pdu], list[str]]:
    for tool in ("sipp",):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    if not Path("/usr/share/sip-tester/g711a.pcap").exists():
        pytest.skip("why: SIPp's g711a.pcap is not installed")
    med = Mediation()
    sip, ng, uas, uas_media, uac = (free_port((10000, 40000)) for _ in range(5))
    lo = 47000 + (sip % 40) * 20
    sipp_pcap_dir(tmp_path)
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(
        f"storage: {{data_dir: {tmp_path / 'var'}}}\n"
        f"edge: {{listen: ['udp:127.0.0.1:{sip}'], auth: false,"
        f" routes: {{'{TARGET}': 'sip:service@127.0.0.1:{uas}'}},"
        f" subscribers: 'sqlite:{tmp_path / 'subs.sqlite'}'}}\n"
        f"media: {{ng_listen: '127.0.0.1:{ng}', rtp_port_min: {lo}, rtp_port_max: {lo + 19}}}\n"
        f"privacy: {{li_mediation: '127.0.0.1:{med.port}'}}\n"
    )
    now = time.time()
    span = (now - 3600, now + 3600) if valid else (now - 7200, now - 3600)
    base = ["--config", str(cfg), "--data-dir", str(tmp_path / "var")]
    r = CliRunner().invoke(app, ["privacy", "li", "provision", "--liid", "LIID-S", "--target",
                                 TARGET, "--from", str(span[0]), "--to", str(span[1]),
                                 "--authority", "Court", "--actor", "o1", "--role",
                                 "li-officer", *base])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["privacy", "li", "activate", "LIID-S", "--actor", "o2",
                                 "--role", "li-officer", *base])  # fmt: skip
    assert r.exit_code == 0, r.output
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([sys.executable, "-m", "callward.cli", "serve", "--config", str(cfg),
                              "--no-web", "--json"], stdout=subprocess.PIPE, stderr=log,
                             text=True, cwd=tmp_path)  # fmt: skip
    try:
        assert serve.stdout is not None
        while json.loads(serve.stdout.readline() or '{"event": "serving"}').get("event") != (
            "serving"
        ):
            pass
        with sipp_uas(tmp_path, uas, extra=["-mp", str(uas_media), "-rtp_echo"]):
            run = sipp_client_cmd(sip, calls=1, scenario=("-sn", "uac_pcap"), service=TARGET,
                                  extra=["-mp", str(uac)])  # fmt: skip
            res = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-1000:]
        time.sleep(1.0)  # let the mediation client drain
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        log.close()
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()[-2000:]
    rec = open_records(tmp_path / "var")
    try:
        actions = [e.action for e in rec.audit.entries()]
    finally:
        rec.close()
    return med.pdus(), actions


def test_valid_warrant_iri_and_cc_reach_mediation(tmp_path: Path) -> None:
    pdus, actions = _run_call(tmp_path, valid=True)
    x2 = [iri_record(p)["type"] for p in pdus if p.pdu_type is PduType.X2]
    x3 = [p.payload for p in pdus if p.pdu_type is PduType.X3]
    assert x2[0] == "BEGIN" and "END" in x2, x2
    assert len(x3) > 100 and all(p[0] >> 6 == 2 for p in x3)  # RTP version 2
    assert "warrant" not in actions and "intercept" not in actions


def test_expired_warrant_nothing_reaches_mediation(tmp_path: Path) -> None:
    pdus, actions = _run_call(tmp_path, valid=False)
    assert pdus == []
    assert "warrant" not in actions and "intercept" not in actions
