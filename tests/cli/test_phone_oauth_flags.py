"""``callward phone`` OAuth flags on bad input: one line on stderr, exit 2 for usage errors,
exit 1 when the IdP cannot give a token; never a traceback, never a fallback to digest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oauth_idp import LocalIdP
from peers import free_port

CLI = [sys.executable, "-m", "callward.cli", "phone"]
TARGET = "sip:bob@127.0.0.1:5"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CALLWARD_KEYSTORE_PASSPHRASE": "pp", **env}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=full,
                          check=False)  # fmt: skip


def _one_line(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.write_text("JBSWY3DPEHPK3PXP\n")
    seed.chmod(0o644)
    ks = str(tmp_path / "ks")
    _one_line(_run(["call", TARGET, "--oauth-issuer", "http://127.0.0.1:9", "--keystore", ks]),
              2, "needs --register")  # fmt: skip
    _one_line(_run(["call", TARGET, "--register", "--proxy", "127.0.0.1:5", "--oauth-issuer",
                    "http://127.0.0.1:9", "--totp-secret-file", str(seed)],
                   CALLWARD_PHONE_PASSWORD="pw"), 2, "readable by others")  # fmt: skip
    seed.chmod(0o600)
    seed.write_text("not base32 !!\n")
    _one_line(_run(["call", TARGET, "--register", "--proxy", "127.0.0.1:5", "--oauth-issuer",
                    "http://127.0.0.1:9", "--totp-secret-file", str(seed)],
                   CALLWARD_PHONE_PASSWORD="pw"), 2, "base32")  # fmt: skip
    _one_line(_run(["call", TARGET, "--totp-secret-file", str(seed)]), 2, "need --oauth-issuer")
    _one_line(_run(["call", TARGET, "--register", "--proxy", "127.0.0.1:5", "--oauth-issuer",
                    "http://idp.example.com", "--keystore", ks]), 2, "loopback only")  # fmt: skip


def test_unreachable_issuer_exits_1(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    _one_line(_run(["login", "--oauth-issuer", dead, "--keystore", str(tmp_path / "ks"),
                    "--timeout", "5"]), 1, "issuer unreachable")  # fmt: skip


@pytest.mark.timeout(60)
def test_no_second_factor_no_token_no_fallback(tmp_path: Path) -> None:
    idp = LocalIdP().start()
    try:
        idp.add_user("alice", "pw")
        # an empty keystore, a password but no TOTP seed: nothing weaker is tried
        proc = _run(["call", TARGET, "--register", "--proxy", "127.0.0.1:5", "--oauth-issuer",
                     idp.issuer, "--keystore", str(tmp_path / "ks"), "--timeout", "5"],
                    CALLWARD_PHONE_PASSWORD="pw")  # fmt: skip
        _one_line(proc, 1, "second factor")
        assert idp.stats.token_requests == 0 and idp.stats.logins == 0
    finally:
        idp.stop()
