"""Recording consent on the real serve path: SIPp ``uac_pcap`` (caller ``sipp@127.0.0.1``)
calls a number through ``callward serve`` (edge -> relay over ng -> SIPp uas echoing RTP) with
``privacy.record_calls`` under an all-party jurisdiction (GDPR). Consent is given or withheld
with ``callward privacy consent set``. One party without consent: no recording is written and
the audit trail says why; both consenting: the relay records the call's RTP, the recording is
marked as announced, and the decision is audited."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.records.service import open_records
from peers import free_port, sipp_client_cmd, sipp_pcap_dir, sipp_uas

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
CALLEE = "+447700900555"
CALLER = "sipp@127.0.0.1"  # what the edge sees in SIPp's From (user@host)
PORTS = (28000, 28499)  # gov13's block; the relay's media ports come from 28500-28899


def _run_call(tmp_path: Path, consenting: tuple[str, ...]) -> tuple[list[Path], list[dict]]:
    if shutil.which("sipp") is None:
        pytest.skip("why: sipp not installed")
    if not Path("/usr/share/sip-tester/g711a.pcap").exists():
        pytest.skip("why: SIPp's g711a.pcap is not installed")
    sip, ng, uas, uas_media, uac = (free_port(PORTS) for _ in range(5))
    lo = 28500 + (sip % 20) * 20
    sipp_pcap_dir(tmp_path)
    data = tmp_path / "var"
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(
        f"storage: {{data_dir: {data}}}\n"
        f"edge: {{listen: ['udp:127.0.0.1:{sip}'], auth: false,"
        f" routes: {{'{CALLEE}': 'sip:service@127.0.0.1:{uas}'}},"
        f" subscribers: 'sqlite:{tmp_path / 'subs.sqlite'}'}}\n"
        f"media: {{ng_listen: '127.0.0.1:{ng}', rtp_port_min: {lo}, rtp_port_max: {lo + 19}}}\n"
        "privacy: {record_calls: true, recording_jurisdiction: GDPR}\n"
    )
    base = ["--config", str(cfg), "--data-dir", str(data)]
    for subject in consenting:
        r = CliRunner().invoke(app, ["privacy", "consent", "set", "--subject", subject,
                                     "--jurisdiction", "GDPR", "--given", "--evidence",
                                     "IVR-prompt-7", "--actor", "ivr", *base])  # fmt: skip
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
            run = sipp_client_cmd(sip, calls=1, scenario=("-sn", "uac_pcap"), service=CALLEE,
                                  extra=["-mp", str(uac)])  # fmt: skip
            res = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-1000:]
        time.sleep(0.5)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
        log.close()
    rec = open_records(data)
    try:
        decisions = [json.loads(e.detail) | {"reason": e.reason}
                     for e in rec.audit.entries() if e.action == "recording"]  # fmt: skip
    finally:
        rec.close()
    return sorted((data / "recordings").glob("*.rtp")), decisions


def _packets(path: Path) -> tuple[dict, list[tuple[str, bytes]]]:
    """(header, [(leg, RTP packet)]) of a recording file."""
    raw = path.read_bytes()
    head, _, rest = raw.partition(b"\n")
    out, pos = [], 0
    while pos + 3 <= len(rest):
        size = int.from_bytes(rest[pos + 1 : pos + 3], "big")
        pkt = rest[pos + 3 : pos + 3 + size]
        assert pkt[0] >> 6 == 2  # each recorded packet is RTP version 2
        out.append((rest[pos : pos + 1].decode(), pkt))
        pos += 3 + size
    return json.loads(head), out


def test_all_party_one_refuses_no_recording(tmp_path: Path) -> None:
    files, decisions = _run_call(tmp_path, consenting=(CALLEE,))  # the caller never consented
    assert files == []
    assert [d["reason"] for d in decisions] == ["recording refused"]
    assert decisions[0]["mode"] == "all-party" and len(decisions[0]["missing"]) == 1


def test_all_party_every_party_consents_recorded_with_announcement(tmp_path: Path) -> None:
    files, decisions = _run_call(tmp_path, consenting=(CALLEE, f"sip:{CALLER}"))
    assert [d["reason"] for d in decisions] == ["recording allowed"]
    assert decisions[0]["announcement"] is True
    (path,) = files
    head, packets = _packets(path)
    assert head["announcement"] is True and head["jurisdiction"] == "GDPR"
    assert len(packets) > 100  # both directions of the call's RTP went through the tap
    assert path.stat().st_mode & 0o777 == 0o600
    # The announcement was played into the media: the relay put the tone into what it sent
    # SIPp's uas, which echoed it back, so the first echoed packets (leg b) hold a 1400 Hz
    # tone (stdlib G.711 decode + Goertzel), and the caller's own speech (leg a) does not.
    from tests.privacy.test_announcement import pcm, tone_ratio

    def ratios(leg: str) -> list[float]:
        return [tone_ratio(pcm(p[12:], p[1] & 0x7F)) for lg, p in packets if lg == leg]

    echoed, spoken = ratios("b"), ratios("a")
    assert sum(r > 0.9 for r in echoed[:30]) >= 15, echoed[:30]
    assert sum(r > 0.9 for r in echoed[60:]) <= 2  # one beep, then the call's own audio
    assert sum(r > 0.9 for r in spoken) <= 2
