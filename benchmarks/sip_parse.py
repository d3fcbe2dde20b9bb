"""SIP parse/serialize throughput: callward vs the Python peers, same mix, same run.

Each parser does a "full parse": the message plus the typed headers every hop needs
(Via, From, To, CSeq, Call-ID, Contact). Run: ``.venv/bin/python benchmarks/sip_parse.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callward.sip import parse_message, parser, serialize
from sip_messages import MIX


def ours(data: bytes) -> object:
    m = parse_message(data)
    m.vias, m.from_, m.to, m.cseq, m.call_id, m.contacts  # noqa: B018
    return m


def ours_pure(data: bytes) -> object:
    """The same full parse through the pure-Python reference parser (no accelerator)."""
    m = parser._parse_pure(data, True, parser.DEFAULT_LIMITS)
    m.vias, m.from_, m.to, m.cseq, m.call_id, m.contacts  # noqa: B018
    return m


def peer_sipmessage() -> Callable[[bytes], object] | None:
    try:
        from sipmessage import Message
    except ImportError:
        return None

    def parse(data: bytes) -> object:
        m = Message.parse(data)
        m.via, m.from_address, m.to_address, m.cseq, m.call_id, m.contact  # noqa: B018
        return m

    return parse


def peer_pyvoip() -> Callable[[bytes], object] | None:
    try:
        import pyVoIP  # noqa: F401, I001
        from pyVoIP.VoIP import VoIP  # noqa: F401  (import order: breaks a cycle in pyVoIP)
        from pyVoIP.SIP import SIPMessage
    except ImportError:
        return None
    return SIPMessage  # parses everything eagerly in the constructor


def peer_sippy() -> Callable[[bytes], object] | None:
    try:
        from sippy.SipRequest import SipRequest
        from sippy.SipResponse import SipResponse
    except ImportError:
        return None

    def parse(data: bytes) -> object:
        text = data.decode()
        cls = SipResponse if text.startswith("SIP/") else SipRequest
        m = cls(buf=text)
        for name in ("via", "from", "to", "cseq", "call-id"):
            m.getHFBody(name)
        m.getHFBodys("contact")
        return m

    return parse


def rate(fn: Callable[[bytes], object], mix: list[bytes], seconds: float) -> float:
    """Messages per second, best of 5 rounds of ~seconds/5 each."""
    best = 0.0
    n = len(mix)
    reps = 50
    for _ in range(5):
        gc.collect()
        t0 = time.perf_counter()
        done = 0
        while time.perf_counter() - t0 < seconds / 5:
            for _ in range(reps):
                for data in mix:
                    fn(data)
            done += reps * n
        best = max(best, done / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    results: dict[str, float] = {}
    notes: dict[str, str] = {}
    peers = {
        "callward": ours,
        "sipmessage": peer_sipmessage(),
        "pyvoip": peer_pyvoip(),
        "sippy": peer_sippy(),
    }
    for name, fn in peers.items():
        if fn is None:
            notes[name] = "not installed"
            continue
        usable = []
        for data in MIX:
            try:
                fn(data)
                usable.append(data)
            except Exception as exc:  # a peer failing on valid input is a finding, not a crash
                notes[name] = f"fails on {data.split(b' ', 1)[0]!r}...: {type(exc).__name__}"
        if len(usable) != len(MIX):
            notes[name] = notes.get(name, "") + f" (measured on {len(usable)}/{len(MIX)})"
        results[name] = rate(fn, usable, args.seconds)

    results["callward pure"] = rate(ours_pure, MIX, args.seconds)
    parsed = [parse_message(d) for d in MIX]
    results["callward serialize"] = rate(
        lambda m: serialize(m),  # type: ignore[arg-type]
        parsed,  # type: ignore[arg-type]
        args.seconds,
    )
    ours_keys = ("callward", "callward pure", "callward serialize")
    fastest_peer = max(v for k, v in results.items() if k not in ours_keys)
    out = {
        "messages_per_s": {k: round(v) for k, v in results.items()},
        "ratio_vs_fastest_peer": round(results["callward"] / fastest_peer, 2),
        "pure_ratio_vs_fastest_peer": round(results["callward pure"] / fastest_peer, 2),
        "serialize_vs_parse": round(results["callward serialize"] / results["callward"], 2),
        "accelerated": parser.ACCELERATED,
        "notes": notes,
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for k, v in out["messages_per_s"].items():  # type: ignore[union-attr]
        print(f"{k:20s} {v:>10,} msg/s")
    mode = "C accelerator" if parser.ACCELERATED else "pure Python"
    print(f"callward / fastest peer: {out['ratio_vs_fastest_peer']}x ({mode})")
    print(f"pure / fastest peer:     {out['pure_ratio_vs_fastest_peer']}x")
    print(f"serialize / parse:       {out['serialize_vs_parse']}x")
    for k, v in notes.items():
        print(f"note {k}: {v}")


if __name__ == "__main__":
    main()
