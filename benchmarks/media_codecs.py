"""G.711 throughput: callward's numpy table codec against CPython's audioop (C, the peer;
present up to Python 3.12) on the same audio, in the same run; plus RTP parse/build rate.

    .venv/bin/python benchmarks/media_codecs.py [--seconds 600]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from callward.media.g711 import alaw_encode, ulaw_decode, ulaw_encode
from callward.rtp.packet import RtpPacket, parse_rtp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def best(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600.0)
    args = ap.parse_args()
    n = int(8000 * args.seconds)
    pcm = (np.random.default_rng(1).normal(0, 3000, n)).clip(-32768, 32767).astype(np.int16)
    raw = pcm.tobytes()
    ulaw = ulaw_encode(pcm)
    assert ulaw == audioop.lin2ulaw(raw, 2)
    rows = [
        ("μ-law encode, whole buffer", lambda: ulaw_encode(pcm), lambda: audioop.lin2ulaw(raw, 2)),
        ("A-law encode, whole buffer", lambda: alaw_encode(pcm), lambda: audioop.lin2alaw(raw, 2)),
        (
            "μ-law decode, whole buffer",
            lambda: ulaw_decode(ulaw),
            lambda: audioop.ulaw2lin(ulaw, 2),
        ),
    ]
    frames = [pcm[i : i + 160] for i in range(0, min(n, 8000 * 60), 160)]
    fbytes = [f.tobytes() for f in frames]
    rows.append(("μ-law encode, 20 ms frames",
                 lambda: [ulaw_encode(f) for f in frames],
                 lambda: [audioop.lin2ulaw(b, 2) for b in fbytes]))  # fmt: skip
    print(f"{'operation':<28} {'callward Msamples/s':>20} {'audioop Msamples/s':>19} {'ratio':>6}")
    for name, ours, peer in rows:
        samples = len(frames) * 160 if "frames" in name else n
        t_ours, t_peer = best(ours), best(peer)
        print(f"{name:<28} {samples / t_ours / 1e6:>20.1f} {samples / t_peer / 1e6:>19.1f} "
              f"{t_peer / t_ours:>6.2f}")  # fmt: skip
    pkts = [bytes(RtpPacket(0, i % 65536, i * 160, 1, b"\xff" * 160)) for i in range(100_000)]
    t = best(lambda: [parse_rtp(p) for p in pkts], 3)
    objs = [parse_rtp(p) for p in pkts]
    t2 = best(lambda: [bytes(o) for o in objs], 3)
    print(f"\nRTP parse: {len(pkts) / t:,.0f} packets/s; build: {len(pkts) / t2:,.0f} packets/s")


if __name__ == "__main__":
    main()
