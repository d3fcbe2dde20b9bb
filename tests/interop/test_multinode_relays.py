"""Two `callward relay --ng` processes behind one `callward edge` (media.relays, ping health
checks): SIPp calls are anchored on both relays; after one relay is killed with SIGKILL, every
new call is anchored on the other one and completes. Each relay wrote one CDR per call it
anchored (its own data directory), so the split is read back from the stores."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from callward.records.rows import CdrQuery
from callward.records.service import open_records
from peers import callward_edge, callward_relay, free_port, sipp_client_cmd, sipp_uas

pytestmark = [pytest.mark.interop, pytest.mark.timeout(150)]


def cdrs(var: Path) -> set[str]:
    rec = open_records(var)
    try:
        return {c.call_id for c in rec.store.query(CdrQuery())}
    finally:
        rec.close()


def test_dead_relay_leaves_rotation(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.skip("why: sipp not installed")
    sip, uas, ng1, ng2 = (free_port((10000, 40000)) for _ in range(4))
    config = (
        f"edge: {{listen: ['udp:127.0.0.1:{sip}'], auth: false,"
        f" routes: {{service: 'sip:service@127.0.0.1:{uas}'}}}}\n"
        f"storage: {{data_dir: {tmp_path / 'edge-var'}}}\n"
        f"media: {{relays: ['127.0.0.1:{ng1}', '127.0.0.1:{ng2}'], relay_ping_s: 0.5}}\n"
    )
    var1, var2 = tmp_path / "var1", tmp_path / "var2"
    with (
        sipp_uas(tmp_path, uas),
        callward_relay(tmp_path, ng1, (48000, 48199), env={"CALLWARD_STORAGE__DATA_DIR": str(var1)}) as r1,
        callward_relay(tmp_path, ng2, (48200, 48399), env={"CALLWARD_STORAGE__DATA_DIR": str(var2)}) as r2,
        callward_edge(tmp_path, config=config),
    ):  # fmt: skip
        res = subprocess.run(sipp_client_cmd(sip, calls=12, rate=6), cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stdout[-1500:]
        r1.send_signal(signal.SIGKILL)
        r1.wait(10)
        before2 = cdrs(var2)
        first1 = cdrs(var1)
        assert first1 and before2 and len(first1) + len(before2) == 12  # both in rotation
        res = subprocess.run(sipp_client_cmd(sip, calls=12, rate=6), cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stdout[-1500:]  # no call failed on the dead relay
        r2.send_signal(signal.SIGTERM)
        r2.wait(20)
    after2 = cdrs(var2)
    assert len(after2 - before2) == 12 and cdrs(var1) == first1
