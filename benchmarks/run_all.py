"""Run every benchmark script in turn (``make bench``); each compares with its peer in the
same run and prints its own ratios. Pass script names to run a subset:
``.venv/bin/python benchmarks/run_all.py sip_parse quality_analyze``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "sip_parse",
    "sdp_parse",
    "sip_transport_uas",
    "sip_digest_register",
    "edge_cps",
    "media_codecs",
    "media_jitter",
    "media_vad",
    "relay_throughput",
    "quality_analyze",
    "records_ingest",
    "records_lookup",
    "web_paging",
    "cli_startup",
    "usage_idle",
    "usage_ns",
    "usage_phone",
    "usage_rohc",
    "usage_wire",
    "identity_day",
    "relay_vs_rtpengine",
    "serve_cps_vs_kamailio",
    "registration_storm",
    "keepalive_idle",
    "refresh_storm",
    "edge_security_flood",
]


def main(argv: list[str]) -> int:
    chosen = argv or SCRIPTS
    unknown = [name for name in chosen if name not in SCRIPTS]
    if unknown:
        print(f"run_all: unknown benchmark {unknown[0]!r}; expected one of {', '.join(SCRIPTS)}")
        return 2
    failed = []
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"=== {name}: exit {rc} in {time.monotonic() - t0:.0f} s ===", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
