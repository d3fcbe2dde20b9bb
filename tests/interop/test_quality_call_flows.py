"""Call verdicts on captures of real call flows: a SIPp caller authenticates with digest
(407 challenge, authenticated retry) through `callward edge` to a SIPp callee that echoes RTP,
and a caller that cancels while it rings; tshark records loopback. `callward analyze` must call
the first answered (not `call_failed 407`) and the second cancelled, both with exit code 0.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from callward.quality.synth import RtpSpec, rtp_frames, write_pcap
from peers import (
    CALLWARD_CLI,
    add_subscriber,
    callward_edge,
    free_port,
    kill_pid,
    sipp_background,
    sipp_uas_cmd,
    tshark_capture,
)

pytestmark = pytest.mark.interop

_HDR = """      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: alice <sip:alice@[remote_ip]:[remote_port]>;tag=[pid]cw[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}
      Call-ID: [call_id]
      Contact: sip:alice@[local_ip]:[local_port]
      Max-Forwards: 70"""
_SDP = """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=alice 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000"""


def _invite(cseq: int, auth: bool) -> str:
    return f"""  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
{_HDR.format(to_tag="")}
      CSeq: {cseq} INVITE
{"      [authentication]" if auth else ""}
{_SDP}
    ]]></send>"""


def _ack_non2xx(cseq: int) -> str:
    # RFC 3261 §17.1.1.3: the ACK of a non-2xx reuses the INVITE's Via and the response's To.
    return f"""  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>"""


def _in_dialog(method: str, cseq: int) -> str:
    retrans = "" if method == "ACK" else ' retrans="500"'
    return f"""  <send{retrans}><![CDATA[
      {method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0
{_HDR.format(to_tag="[peer_tag_param]")}
      CSeq: {cseq} {method}
      Content-Length: 0
    ]]></send>"""


# INVITE, 407, ACK, the authenticated INVITE (RFC 3261 §22.2): how both scenarios start.
_CHALLENGED = f"""{_invite(1, auth=False)}
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
{_ack_non2xx(1)}
{_invite(2, auth=True)}
  <recv response="100" optional="true"/>"""

AUTH_CALL = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="digest-challenged call">
{_CHALLENGED}
  <recv response="180" optional="true"/>
  <recv response="200"/>
{_in_dialog("ACK", 2)}
  <nop><action><exec play_pcap_audio="MEDIA"/></action></nop>
  <pause milliseconds="2500"/>
{_in_dialog("BYE", 3)}
  <recv response="200" crlf="true"/>
</scenario>
"""

CANCEL_CALL = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="cancelled while ringing">
{_CHALLENGED}
  <recv response="180"/>
  <send><![CDATA[
      CANCEL sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: alice <sip:alice@[remote_ip]:[remote_port]>;tag=[pid]cw[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 2 CANCEL
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <recv response="200"/>
  <recv response="487"/>
{_ack_non2xx(2)}
</scenario>
"""

# A callee that rings and never answers (the CANCEL scenario's peer).
RINGING_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ringing uas">
  <recv request="INVITE"/>
  <send><![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]uas[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:bob@[local_ip]:[local_port]>
      Content-Length: 0
    ]]></send>
  <recv request="CANCEL"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]uas[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]></send>
  <send><![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]uas[call_number]
      [last_Call-ID:]
      CSeq: 2 INVITE
      Content-Length: 0
    ]]></send>
  <recv request="ACK"/>
</scenario>
"""


def _need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"why: {t} not installed")


def _run_call(tmp_path: Path, uac_xml: str, uas_xml: str | None) -> dict:
    edge, uas_sip, uac_sip, uas_media, uac_media = (free_port() for _ in range(5))
    media = tmp_path / "media.pcap"
    write_pcap(media, rtp_frames(RtpSpec(count=100, pt=8, loss=0.01, seed=5)))
    scen = tmp_path / "uac.xml"
    scen.write_text(uac_xml.replace("MEDIA", str(media)))
    db = add_subscriber(tmp_path, "alice", "s3cret")
    cap = tmp_path / "call.pcap"
    uas_extra: tuple[str, ...] = ("-mi", "127.0.0.1", "-mp", str(uas_media), "-m", "1")
    if uas_xml is None:
        uas_extra += ("-rtp_echo",)
    else:
        (tmp_path / "uas.xml").write_text(uas_xml)
    uas_cmd = sipp_uas_cmd(uas_sip, extra=uas_extra)
    if uas_xml is not None:
        uas_cmd[uas_cmd.index("-sn") : uas_cmd.index("-sn") + 2] = [
            "-sf",
            str(tmp_path / "uas.xml"),
        ]
    uas_pid = None
    with (
        tshark_capture(cap, [edge, uas_sip, uac_sip, uas_media, uac_media]),
        callward_edge(
            tmp_path,
            "--listen",
            f"udp:127.0.0.1:{edge}",
            "--subscribers",
            db,
            "--route",
            f"svc=sip:svc@127.0.0.1:{uas_sip}",
        ),  # fmt: skip
    ):
        try:
            uas_pid = sipp_background(uas_cmd, tmp_path)
            uac = subprocess.run(
                ["sipp", f"127.0.0.1:{edge}", "-sf", str(scen), "-i", "127.0.0.1", "-p",
                 str(uac_sip), "-mi", "127.0.0.1", "-mp", str(uac_media), "-m", "1", "-nostdin",
                 "-timeout", "20s", "-s", "svc", "-au", "alice", "-ap", "s3cret",
                 "-auth_uri", f"svc@127.0.0.1:{edge}"],
                capture_output=True, text=True, timeout=40, cwd=tmp_path,
            )  # fmt: skip
            assert uac.returncode == 0, uac.stdout[-800:]
            time.sleep(0.5)
        finally:
            if uas_pid is not None:
                kill_pid(uas_pid, wait=0)
    res = subprocess.run([*CALLWARD_CLI, "analyze", "--json", str(cap)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert res.returncode in (0, 1), res.stderr
    out = json.loads(res.stdout)
    out["exit"] = res.returncode
    return out


def test_digest_challenged_call_through_the_edge_is_answered(tmp_path: Path) -> None:
    _need("sipp", "tshark")
    rep = _run_call(tmp_path, AUTH_CALL, None)
    (call,) = rep["calls"]
    assert (call["outcome"], call["final_status"], call["challenges"]) == ("answered", 200, 1)
    assert [a["status"] for a in call["attempts"]] == [407, 200]
    assert call["problems"] == [] and len(call["streams"]) == 2
    assert rep["exit"] == 0


def test_call_cancelled_while_ringing_is_not_a_failure(tmp_path: Path) -> None:
    _need("sipp", "tshark")
    rep = _run_call(tmp_path, CANCEL_CALL, RINGING_UAS)
    (call,) = rep["calls"]
    assert (call["outcome"], call["final_status"], call["cancelled"]) == ("cancelled", 487, True)
    assert call["problems"] == [] and rep["exit"] == 0
