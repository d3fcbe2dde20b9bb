"""SDP parse/serialize throughput: callward.sdp vs sdp-transform (pure Python), same run.

Mix: every SDP in tests/vectors/sdp (SIPp, baresip SDES, Cisco legacy, Asterisk hold, WebRTC
DTLS, multi-stream, ZRTP). Both sides get the same ``str``. Two of our figures:

* ``structure``: ``parse_sdp`` alone (model with raw attributes, what a proxy needs);
* ``typed``: plus codecs, crypto, fingerprints and direction of every stream, which is about
  what sdp-transform's ``parse`` computes (it decodes rtpmap/fmtp/crypto/... into dicts).

Run: ``.venv/bin/python benchmarks/sdp_parse.py [--seconds 1.0] [--json]`` (``--seconds`` per
case; cases run interleaved in 20 ms batches and each keeps its best batch).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

import sdp_transform

from callward.sdp import (
    create_answer,
    effective_direction,
    media_codecs,
    media_crypto,
    media_fingerprints,
    parse_sdp,
)
from callward.sdp.offer_answer import LocalMedia
from callward.sdp.security import Fingerprint

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "sdp"
MIX = [p.read_text() for p in sorted(VECTORS.glob("*.sdp"))]


def ours_structure(text: str) -> object:
    return parse_sdp(text)


def ours_typed(text: str) -> object:
    sd = parse_sdp(text)
    for md in sd.media:
        media_codecs(md)
        media_crypto(md)
        media_fingerprints(sd, md)
        effective_direction(sd, md)
    return sd


def measure(
    cases: dict[str, tuple[Callable[[str], object], list[str]]], seconds: float
) -> dict[str, float]:
    """Items per second for each case, best of many short batches run *interleaved*, so
    load from other processes on this shared machine hits ours and the peer alike."""
    batch: dict[str, int] = {}
    for name, (fn, items) in cases.items():  # warm up and size a batch to ~20 ms
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.05:
            for t in items:
                fn(t)
            n += 1
        batch[name] = max(1, int(n * 0.02 / (time.perf_counter() - start)))
    best = dict.fromkeys(cases, 0.0)
    deadline = time.perf_counter() + seconds * len(cases)
    while time.perf_counter() < deadline:
        for name, (fn, items) in cases.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(batch[name]):
                for t in items:
                    fn(t)
            elapsed = time.perf_counter() - start
            best[name] = max(best[name], batch[name] * len(items) / elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    parsed_ours = [parse_sdp(t) for t in MIX]
    parsed_peer = [sdp_transform.parse(t) for t in MIX]
    local = LocalMedia("192.0.2.1", (40000,), fingerprint=Fingerprint("sha-1", "AB:" * 19 + "AB"))
    answerable = [sd for sd in parsed_ours if any(m.media == "audio" for m in sd.media)]

    def answer_any(_: str) -> object:
        for sd in answerable:
            try:
                create_answer(sd, local, rng=lambda n: b"\x01" * n)
            except Exception:  # a refused offer is a result too (488)
                pass
        return None

    idx = [str(i) for i in range(len(MIX))]
    res = measure(
        {
            "parse_structure": (ours_structure, MIX),
            "parse_typed": (ours_typed, MIX),
            "peer_parse": (sdp_transform.parse, MIX),
            "serialize": (lambda i: str(parsed_ours[int(i)]), idx),
            "peer_write": (lambda i: sdp_transform.write(parsed_peer[int(i)]), idx),
            "answers": (answer_any, ["x"]),
        },
        args.seconds,
    )
    res["answers"] *= len(answerable)
    res["ratio_parse_typed_vs_peer"] = res["parse_typed"] / res["peer_parse"]
    res["ratio_parse_structure_vs_peer"] = res["parse_structure"] / res["peer_parse"]
    res["ratio_serialize_vs_peer"] = res["serialize"] / res["peer_write"]
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"mix: {len(MIX)} SDPs from tests/vectors/sdp, best 20 ms batch, interleaved")
    print(f"{'what':<34}{'SDP/s':>12}")
    print(f"{'callward parse (structure)':<34}{res['parse_structure']:>12,.0f}")
    print(f"{'callward parse (typed views)':<34}{res['parse_typed']:>12,.0f}")
    print(f"{'sdp-transform parse':<34}{res['peer_parse']:>12,.0f}")
    print(f"{'callward serialize':<34}{res['serialize']:>12,.0f}")
    print(f"{'sdp-transform write':<34}{res['peer_write']:>12,.0f}")
    print(f"{'callward create_answer':<34}{res['answers']:>12,.0f}")
    print(f"ratio typed parse / sdp-transform:     {res['ratio_parse_typed_vs_peer']:.1f}x")
    print(f"ratio structure parse / sdp-transform: {res['ratio_parse_structure_vs_peer']:.1f}x")
    print(f"ratio serialize / sdp-transform write: {res['ratio_serialize_vs_peer']:.1f}x")


if __name__ == "__main__":
    main()
