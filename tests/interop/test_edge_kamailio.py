"""Kamailio 5.6 as the second upstream of callward edge: the first upstream is dead, the edge
fails over to Kamailio (after Timer B), blacklists the dead one, and every SIPp call completes
(SIPp uac → edge → Kamailio → SIPp uas). The failover count is read from /metrics."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from peers import callward_edge, free_port, kamailio_proxy, sipp_client_cmd, sipp_uas

pytestmark = pytest.mark.interop


def test_failover_to_kamailio_upstream(tmp_path: Path) -> None:
    for tool in ("kamailio", "sipp"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    uas, kam, dead, edge_port, metrics = (free_port((10000, 60000)) for _ in range(5))
    config = (
        "edge:\n"
        f"  listen: ['udp:127.0.0.1:{edge_port}']\n"
        "  auth: false\n"
        "  t1: 0.05\n"
        "  blacklist_seconds: 120\n"
        f"  upstreams: ['sip:127.0.0.1:{dead}', 'sip:127.0.0.1:{kam}']\n"
        f"  metrics_listen: '127.0.0.1:{metrics}'\n"
    )
    with (
        sipp_uas(tmp_path, uas),
        kamailio_proxy(tmp_path, kam, uas),
        callward_edge(tmp_path, config=config),
    ):
        # one call first (waits 64*T1 on the dead upstream), then 20 more
        for calls, rate in ((1, 1), (20, 10)):
            cmd = sipp_client_cmd(edge_port, calls=calls, rate=rate)
            res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=90)
            assert res.returncode == 0, res.stderr[:3000]
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        failovers = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("callward_edge_failovers_total ")
        ]
        # only the first call waited for the dead upstream; then it was blacklisted
        assert failovers == [1.0]
        assert "127.0.0.1" not in text  # no addresses in metric labels
