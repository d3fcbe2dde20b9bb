"""ROHC on callward's own calls: compressed header size per packet and bytes per minute on the
radio link, from a dumpcap capture of a real demo call.

The call is ``callward demo`` (Opus CBR, DTX, SRTP, RTCP) with ``--keep-capture``; each RTP
direction is run through ``usage/rohc.py``'s U-mode compressor and, as a check, its
decompressor (every header must come back bit-exact). The "peer" is the uncompressed capture.

    .venv/bin/python benchmarks/usage_rohc.py [--seconds 60] [demo flags...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from callward.usage.rohc import Decompressor, RtpIp4, compress_flow, parse_rtp_ip4
from callward.usage.wire import measure_capture, rtp_datagrams

CALLWARD = str(Path(sys.executable).with_name("callward"))
DEFAULT = ["--codec", "opus", "--ptime", "60", "--dtx", "--bitrate", "12000", "--loss", "1",
           "--jitter", "20"]  # fmt: skip


def radio_view(datagrams: list[bytes], sequential_id: bool) -> list[bytes]:
    """The sender's packets as its radio link carries them: the ones the demo's shim "lost"
    went to a sink port, on the radio they had the peer's address like the others. With
    ``sequential_id`` the IP-ID counts up per packet, as a phone's kernel numbers one flow
    (on loopback every local flow shares one counter, which makes the IP-ID look random)."""
    hs = [parse_rtp_ip4(d) for d in datagrams]
    dst, dport = Counter((h.dst, h.dport) for h in hs).most_common(1)[0][0]
    out = []
    for i, h in enumerate(hs):
        h2: RtpIp4 = RtpIp4(h.tos, (hs[0].ip_id + i) & 0xFFFF if sequential_id else h.ip_id,
                            h.df, h.ttl, h.src, dst, h.sport, dport, h.udp_checksum, h.marker,
                            h.payload_type, h.sn, h.ts, h.ssrc, h.payload, h.padding)  # fmt: skip
        out.append(bytes(h2))
    return out


def main(argv: list[str]) -> int:
    seconds = "60"
    if argv[:1] == ["--seconds"]:
        seconds, argv = argv[1], argv[2:]
    flags = argv or DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "call.pcapng"
        cmd = [CALLWARD, "demo", "--json", "--data-dir", tmp, "--seconds", seconds,
               "--keep-capture", str(cap), *flags]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=float(seconds) + 200)
        doc = json.loads(run.stdout)
        if not doc["ok"]:
            print(f"usage_rohc: the demo call failed: {doc['failure']}")
            return 1
        flows = rtp_datagrams(cap)
        wire = measure_capture(cap)
        rtcp_total = wire.total("rtcp")
    secs = float(seconds)
    print(f"call: {' '.join(flags)}, {seconds} s; capture: dumpcap on lo")
    print(f"{'flow':22} {'pkts':>5} {'hdr B':>6} {'ROHC B':>7} {'IR':>3} {'IR-DYN':>6} "
          f"{'UO-0':>5} {'UO-1':>5} {'UOR-2':>5} {'RND':>4} {'B/min':>8} "
          f"{'ROHC B/min':>10}")  # fmt: skip
    totals: dict[bool, list[float]] = {False: [0.0, 0.0], True: [0.0, 0.0]}
    for name, captured in sorted(flows.items()):
        if len(captured) < 10:
            continue
        for sequential in (False, True):
            datagrams = radio_view(captured, sequential)
            compressed, sizes = compress_flow(datagrams)
            dec = Decompressor()
            exact = sum(dec.decompress(c) == d for c, d in zip(compressed, datagrams, strict=True))
            plain = sum(len(d) for d in datagrams)
            rohc = sum(len(c) for c in compressed)
            totals[sequential][0] += plain
            totals[sequential][1] += rohc
            c = sizes.counts
            label = name + (" seq-ID" if sequential else " as-is")
            print(f"{label:22} {sizes.packets:>5} {40:>6} {sizes.mean_compressed:>7.2f} "
                  f"{c.get('ir', 0):>3} {c.get('ir-dyn', 0):>6} {c.get('uo-0', 0):>5} "
                  f"{c.get('uo-1', 0):>5} {c.get('uor-2', 0):>5} {sizes.rnd!s:>4} "
                  f"{plain * 60 / secs:>8,.0f} {rohc * 60 / secs:>10,.0f}"
                  f"  {'exact' if exact == len(datagrams) else f'{exact} exact'}")  # fmt: skip
    total_plain, total_rohc = totals[True]
    print(f"with the loopback IP-IDs (RND=1): ROHC {totals[False][1] * 60 / secs:,.0f} B/min")
    both_rtcp = rtcp_total * 60 / secs
    print(
        f"both directions RTP: {total_plain * 60 / secs:,.0f} B/min plain, "
        f"{total_rohc * 60 / secs:,.0f} B/min with ROHC; RTCP {both_rtcp:,.0f} B/min "
        f"(not compressed); total with ROHC {(total_rohc * 60 / secs + both_rtcp):,.0f} B/min"
    )
    print(
        f"demo measured both directions with RTCP: "
        f"{doc['usage']['both_directions_with_rtcp_bytes_per_minute']:,} B/min; MOS "
        f"{[leg['mos'] for leg in doc['legs']]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
