"""Call verdicts on captures of real SIPp call flows, recorded by tshark on loopback: a 302
redirect followed by the caller's retry to the new target (RFC 3261 §8.1.3.4), a re-INVITE
answered 491 Request Pending (glare, §14.1), and an INVITE answered by two forked branches
(§16.7: the caller sees 180s with two To tags, then a 200 from one of them, as behind a forking
proxy). The callee is a SIPp scenario that echoes the caller's RTP back (-rtp_echo). Each
capture goes through `callward analyze --json`, whose verdict must be "answered" with no
problem and exit code 0, and which must count the attempts, glare and forks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from callward.quality.synth import RtpSpec, rtp_frames, write_pcap
from peers import CALLWARD_CLI, free_port, kill_pid, sipp_background, sipp_uas_cmd, tshark_capture

pytestmark = pytest.mark.interop

_HDR = """      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: alice <sip:alice@[local_ip]:[local_port]>;tag=[pid]cw[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}
      Call-ID: [call_id]
      Contact: sip:alice@[local_ip]:[local_port]
      Max-Forwards: 70"""
_SDP = """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=alice 1 {version} IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000"""


def _uac_invite(cseq: int, to_tag: str = "", version: int = 1) -> str:
    return f"""  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
{_HDR.format(to_tag=to_tag)}
      CSeq: {cseq} INVITE
{_SDP.format(version=version)}
    ]]></send>"""


def _uac_ack(cseq: int, to_tag: str) -> str:
    return f"""  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: alice <sip:alice@[local_ip]:[local_port]>;tag=[pid]cw[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>"""


def _uac_bye(cseq: int) -> str:
    return f"""  <send retrans="500"><![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
{_HDR.format(to_tag="[peer_tag_param]")}
      CSeq: {cseq} BYE
      Content-Length: 0
    ]]></send>
  <recv response="200" crlf="true"/>"""


_TALK = """  <nop><action><exec play_pcap_audio="MEDIA"/></action></nop>
  <pause milliseconds="2200"/>"""


def _uac(name: str, body: str) -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
{body}
</scenario>
"""


def _uas_reply(status: str, tag: str, *, sdp: bool = False, contact: str = "") -> str:
    body = (
        """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bob 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000"""
        if sdp
        else "      Content-Length: 0"
    )
    return f"""  <send><![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag={tag}
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{contact or "bob"}@[local_ip]:[local_port]>
{body}
    ]]></send>"""


def _uas_in_dialog(status: str) -> str:  # a response to a request that already has our To tag
    return f"""  <send><![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]></send>"""


_UAS_END = f"""  <recv request="BYE"/>
{_uas_in_dialog("200 OK")}"""

# 302 to a new target, the caller's ACK, then the retry (CSeq 2, same Call-ID) is answered.
REDIRECT_UAC = _uac(
    "redirected call",
    f"""{_uac_invite(1)}
  <recv response="100" optional="true"/>
  <recv response="302"/>
{_uac_ack(1, "[peer_tag_param]")}
{_uac_invite(2)}
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
{_uac_ack(2, "[peer_tag_param]")}
{_TALK}
{_uac_bye(3)}""",
)
REDIRECT_UAS = _uac(
    "redirecting uas",
    f"""  <recv request="INVITE"/>
{_uas_reply("302 Moved Temporarily", "redir[call_number]", contact="bob-mobile")}
  <recv request="ACK"/>
  <recv request="INVITE"/>
{_uas_reply("180 Ringing", "bob[call_number]")}
{_uas_reply("200 OK", "bob[call_number]", sdp=True)}
  <recv request="ACK"/>
{_UAS_END}""",
)

# Answered call; the caller's re-INVITE meets the callee's own pending one: 491 (glare).
GLARE_UAC = _uac(
    "re-INVITE glare",
    f"""{_uac_invite(1)}
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200"/>
{_uac_ack(1, "[peer_tag_param]")}
{_TALK}
{_uac_invite(2, to_tag="[peer_tag_param]", version=2)}
  <recv response="491"/>
{_uac_ack(2, "[peer_tag_param]")}
  <pause milliseconds="300"/>
{_uac_bye(3)}""",
)
GLARE_UAS = _uac(
    "glare uas",
    f"""  <recv request="INVITE"/>
{_uas_reply("180 Ringing", "bob[call_number]")}
{_uas_reply("200 OK", "bob[call_number]", sdp=True)}
  <recv request="ACK"/>
  <recv request="INVITE"/>
{_uas_in_dialog("491 Request Pending")}
  <recv request="ACK"/>
{_UAS_END}""",
)

# Two branches ring (two To tags), the second answers; the caller ACKs that 2xx.
FORK_UAC = _uac(
    "forked call",
    f"""{_uac_invite(1)}
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <recv response="180"/>
  <recv response="200"/>
{_uac_ack(1, "[peer_tag_param]")}
{_TALK}
{_uac_bye(2)}""",
)
FORK_UAS = _uac(
    "forking branches",
    f"""  <recv request="INVITE"/>
{_uas_reply("180 Ringing", "desk[call_number]")}
{_uas_reply("180 Ringing", "mobile[call_number]")}
  <pause milliseconds="200"/>
{_uas_reply("200 OK", "mobile[call_number]", sdp=True)}
  <recv request="ACK"/>
{_UAS_END}""",
)


def _need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"why: {t} not installed")


def _run(tmp_path: Path, uac_xml: str, uas_xml: str) -> dict:
    _need("sipp", "tshark")
    uas_sip, uac_sip, uas_media, uac_media = (free_port() for _ in range(4))
    media = tmp_path / "media.pcap"
    write_pcap(media, rtp_frames(RtpSpec(count=100, pt=8, loss=0.01, seed=5)))
    (tmp_path / "uac.xml").write_text(uac_xml.replace("MEDIA", str(media)))
    (tmp_path / "uas.xml").write_text(uas_xml)
    uas_cmd = sipp_uas_cmd(uas_sip, extra=("-mi", "127.0.0.1", "-mp", str(uas_media), "-m", "1",
                                           "-rtp_echo"))  # fmt: skip
    i = uas_cmd.index("-sn")
    uas_cmd[i : i + 2] = ["-sf", str(tmp_path / "uas.xml")]
    cap = tmp_path / "call.pcap"
    uas_pid = None
    with tshark_capture(cap, [uas_sip, uac_sip, uas_media, uac_media]):
        try:
            uas_pid = sipp_background(uas_cmd, tmp_path)
            uac = subprocess.run(
                ["sipp", f"127.0.0.1:{uas_sip}", "-sf", str(tmp_path / "uac.xml"), "-i",
                 "127.0.0.1", "-p", str(uac_sip), "-mi", "127.0.0.1", "-mp", str(uac_media),
                 "-m", "1", "-nostdin", "-timeout", "20s", "-s", "svc"],
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


def test_redirected_call_is_answered_after_the_retry(tmp_path: Path) -> None:
    rep = _run(tmp_path, REDIRECT_UAC, REDIRECT_UAS)
    (call,) = rep["calls"]
    assert (call["outcome"], call["final_status"]) == ("answered", 200)
    assert [a["status"] for a in call["attempts"]] == [302, 200]
    assert call["problems"] == [] and len(call["streams"]) == 2
    assert rep["exit"] == 0


def test_reinvite_glare_does_not_change_the_verdict(tmp_path: Path) -> None:
    rep = _run(tmp_path, GLARE_UAC, GLARE_UAS)
    (call,) = rep["calls"]
    assert (call["outcome"], call["final_status"]) == ("answered", 200)
    assert (call["reinvites"], call["glare"]) == (1, 1)
    assert call["problems"] == [] and len(call["streams"]) == 2
    assert rep["exit"] == 0


def test_forked_call_answered_by_one_branch(tmp_path: Path) -> None:
    rep = _run(tmp_path, FORK_UAC, FORK_UAS)
    (call,) = rep["calls"]
    assert (call["outcome"], call["final_status"], call["forks"]) == ("answered", 200, 2)
    assert call["problems"] == [] and len(call["streams"]) == 2
    assert rep["exit"] == 0
