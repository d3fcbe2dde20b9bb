"""Deterministic synthetic CDRs for tests, benchmarks and demos (no real subscriber data).

Numbers are drawn from ranges reserved for fiction/drama where they exist (e.g. UK Ofcom
07700 900000–900999; we use the +44 7700 900xxx pattern widened with a synthetic suffix) so that
generated data can never be mistaken for a real subscriber's.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from callward.records.schema import Cdr, Leg, Lineage

__all__ = ["synthetic_cdrs", "synthetic_msisdn"]


def synthetic_msisdn(i: int) -> str:
    return f"+447700{900000 + i % 100000:06d}{i // 100000 % 1000:03d}"


def synthetic_cdrs(
    n: int,
    *,
    start: float = 1_760_000_000.0,
    spacing_s: float = 0.5,
    subjects: int = 100_000,
    tenant: str = "default",
    seed: int = 7,
    prefix: str = "syn",
) -> Iterator[Cdr]:
    rnd = random.Random(seed)
    lineage = Lineage(("edge-1", "relay-1"), 6, (1,), ("assembled:v2", "synthetic"))
    for i in range(n):
        t0 = start + i * spacing_s
        answered = rnd.random() < 0.8
        dur = rnd.uniform(5, 600)
        a = synthetic_msisdn(rnd.randrange(subjects))
        b = synthetic_msisdn(rnd.randrange(subjects))
        ans = t0 + 3.0 if answered else None
        end = (ans + dur) if ans is not None else t0 + 20.0
        status = 200 if answered else rnd.choice((486, 487, 480, 503))
        disp = {200: "answered", 486: "busy", 487: "cancelled", 480: "no_answer", 503: "failed"}
        mos = round(rnd.uniform(2.5, 4.4), 2) if answered else None
        leg = Leg("a", ("edge-1",), t0, ans, end, status, "bye" if answered else "error",
                  ("PCMU/8000",), 0, 1500, 3, 4.5, mos)  # fmt: skip
        yield Cdr(
            call_id=f"{prefix}-{i}@edge-1",
            tenant=tenant,
            caller=f"sip:{a}@ims.example",
            callee=f"sip:{b}@ims.example",
            start_ts=t0,
            answer_ts=ans,
            end_ts=end,
            status=status,
            disposition=disp[status],
            legs=(leg,),
            codecs=("PCMU/8000",),
            packets=1500 if answered else 0,
            lost=3 if answered else 0,
            jitter_ms=4.5,
            mos_min=mos,
            lineage=lineage,
        )
