"""callward's own demo call, captured by dumpcap, analysed by `callward analyze`.

The issue that started this: the demo's call (REGISTER with digest, INVITE challenged 407 and
retried with credentials, SRTP through the relay, BYE) was reported as `call_failed 407`. Here
the whole demo runs in a private network namespace whose loopback dumpcap records (so no other
test's traffic lands in the capture), and the verdict must be: one call, answered after one
challenge, both legs' media on both sides of the relay, no problem, exit code 0.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peers import CALLWARD_CLI

pytestmark = pytest.mark.interop


def _netns_ok() -> bool:
    if not all(shutil.which(t) for t in ("unshare", "dumpcap", "ip")):
        return False
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"],
                           capture_output=True, timeout=10)  # fmt: skip
    return probe.returncode == 0


def test_demo_call_captured_by_dumpcap_is_answered(tmp_path: Path) -> None:
    if not _netns_ok():
        pytest.skip("why: needs unshare -n (a private loopback), ip and dumpcap")
    cap, out, pid = tmp_path / "demo.pcapng", tmp_path / "demo.json", tmp_path / "dumpcap.pid"
    demo = [sys.executable, "-c", "from callward.cli import main; main()", "demo",
            "--seconds", "2", "--loss", "0", "--jitter", "0", "--no-capture",
            "--data-dir", str(tmp_path / "var"), "--json"]  # fmt: skip
    script = (
        "ip link set lo up && "
        f"(dumpcap -q -i lo -f udp -w {shlex.quote(str(cap))} 2>/dev/null & echo $! > {pid}); "
        f"sleep 1.5; {shlex.join(demo)} > {shlex.quote(str(out))}; rc=$?; "
        f'sleep 0.7; kill -INT "$(cat {pid})"; sleep 0.5; exit $rc'
    )
    run = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stderr[-800:]
    assert json.loads(out.read_text())["ok"] is True
    res = subprocess.run([*CALLWARD_CLI, "analyze", "--json", str(cap)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stdout[-800:] + res.stderr
    (call,) = json.loads(res.stdout)["calls"]
    assert (call["outcome"], call["final_status"], call["challenges"]) == ("answered", 200, 1)
    assert [a["status"] for a in call["attempts"]] == [407, 200]
    assert call["problems"] == [] and len(call["streams"]) == 4  # two legs x two directions
