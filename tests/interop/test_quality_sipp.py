"""A real SIPp call with RTP played from a pcap, captured by dumpcap on loopback.

SIPp (uac with play_pcap_audio, uas with/without -rtp_echo) produces the SIP dialog and the
media; dumpcap writes the capture. `analyze` must classify the call (healthy with echo,
one-way audio without) and agree with tshark's SDP-driven `-z rtp,streams` on every stream.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from callward.quality.report import analyze_capture
from callward.quality.synth import RtpSpec, rtp_frames, write_pcap
from peers import free_port, kill_pid, sipp_background, sipp_uas_cmd, tshark_rtp_streams

pytestmark = pytest.mark.interop

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callward uac with pcap media">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <nop><action><exec play_pcap_audio="MEDIA"/></action></nop>
  <pause milliseconds="3500"/>
  <send retrans="500"><![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


@pytest.mark.parametrize("echo", [True, False])
def test_sipp_call_analyzed(tmp_path: Path, echo: bool) -> None:
    for tool in ("sipp", "dumpcap", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    uas_sip, uac_sip, uas_media, uac_media = (free_port() for _ in range(4))
    media = tmp_path / "media.pcap"
    write_pcap(media, rtp_frames(RtpSpec(count=150, pt=8, bursts=[(40, 5)], loss=0.02, seed=5)))
    scen = tmp_path / "uac.xml"
    scen.write_text(UAC.replace("MEDIA", str(media)))
    cap = tmp_path / "call.pcapng"
    ports = [uas_sip, uac_sip, uas_media, uac_media]
    filt = " or ".join(f"udp port {p}" for p in ports)
    dump = subprocess.Popen(
        ["dumpcap", "-q", "-i", "lo", "-f", filt, "-w", str(cap), "-a", "duration:40"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uas_pid = None
    try:
        time.sleep(1.5)
        if dump.poll() is not None:
            pytest.skip("why: dumpcap cannot capture on lo (needs CAP_NET_RAW)")
        uas_cmd = sipp_uas_cmd(
            uas_sip, extra=("-mi", "127.0.0.1", "-mp", str(uas_media), "-m", "1")
        )
        if echo:
            uas_cmd.append("-rtp_echo")
        uas_pid = sipp_background(uas_cmd, tmp_path)
        uac = subprocess.run(
            ["sipp", f"127.0.0.1:{uas_sip}", "-sf", str(scen), "-i", "127.0.0.1", "-p",
             str(uac_sip), "-mi", "127.0.0.1", "-mp", str(uac_media), "-m", "1", "-nostdin",
             "-timeout", "25s", "-s", "svc"],
            capture_output=True, text=True, timeout=40, cwd=tmp_path,
        )  # fmt: skip
        assert uac.returncode == 0, uac.stdout[-500:]
        time.sleep(1.0)
    finally:
        dump.terminate()
        dump.wait(timeout=15)
        if uas_pid is not None:
            kill_pid(uas_pid, wait=0)
    rep = analyze_capture(cap)
    assert len(rep.calls) == 1
    call = rep.calls[0]
    assert call.final_status == 200 and call.bye_from == "caller"
    problems = [(p.kind, p.cause, p.direction) for p in call.problems]
    if echo:
        assert problems == [] and len(call.streams) == 2
    else:
        assert problems == [("one_way_audio", "no_packets", "callee->caller")]
    ref = tshark_rtp_streams(
        cap, "-d", f"udp.port=={uas_sip},sip", "-d", f"udp.port=={uac_sip},sip"
    )
    got = {
        (s.src, s.sport, s.dst, s.dport, s.ssrc): (
            s.stats.packets, s.stats.lost, s.stats.max_delta, s.stats.mean_jitter,
            s.stats.max_jitter,
        )
        for s in rep.streams
    }  # fmt: skip
    assert set(got) == set(ref)
    for k, r in ref.items():
        assert got[k][:2] == r[:2]
        assert got[k][1] >= 5  # the burst of 5 in the played file, plus random loss
        for i in (2, 3, 4):
            assert got[k][i] == pytest.approx(r[i], abs=0.01)
