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
from typing import Any

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


Job = tuple[Callable[[Any], object], list[Any]]


def rates(jobs: dict[str, Job], seconds: float, rounds: int = 10) -> dict[str, float]:
    """Messages per CPU-second for each job, best slice of ``rounds`` interleaved rounds.

    The machine is shared: interleaving the implementations round by round exposes them to the
    same load, and process CPU time (not wall time) leaves out the time the scheduler gives to
    other processes, so the ratios stay comparable within one run."""
    best = dict.fromkeys(jobs, 0.0)
    slice_s = seconds / rounds
    for _ in range(rounds):
        for name, (fn, inputs) in jobs.items():
            gc.collect()
            t0 = time.process_time()
            done = 0
            while True:
                for _ in range(10):
                    for data in inputs:
                        fn(data)
                done += 10 * len(inputs)
                spent = time.process_time() - t0
                if spent >= slice_s:
                    break
            best[name] = max(best[name], done / spent)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="CPU seconds per implementation")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    notes: dict[str, str] = {}
    peers = {
        "callward": ours,
        "sipmessage": peer_sipmessage(),
        "pyvoip": peer_pyvoip(),
        "sippy": peer_sippy(),
    }
    jobs: dict[str, Job] = {}
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
        jobs[name] = (fn, usable)
    jobs["callward pure"] = (ours_pure, MIX)
    jobs["callward serialize"] = (serialize, [parse_message(d) for d in MIX])
    results = rates(jobs, args.seconds)
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
