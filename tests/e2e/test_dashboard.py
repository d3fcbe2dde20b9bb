"""The dashboard in a real browser: `callward web` started as a user would (subprocess, free
port on 127.0.0.1), driven by headless Chromium (Debian package) through Playwright.

Checks what a person sees: the calls table shows keyed pseudonyms and never the numbers that
were stored, the per-call charts are drawn, the audit badge reports an intact chain, and the
planner form returns the byte count that the RFC 3550/3711 header arithmetic gives by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callward.quality.synth import RtpSpec, rtp_frames, write_pcap
from callward.records.schema import Cdr, Leg, Lineage
from callward.records.service import open_records

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NUMBERS = ["+447700900111", "+447700900222", "+447700900333"]  # Ofcom drama range
T0 = 1_767_225_600.0


def _callward() -> str:
    local = Path(sys.executable).with_name("callward")
    found = str(local) if local.exists() else shutil.which("callward")
    if found is None:
        pytest.skip("why: the callward console script is not installed (pip install -e .)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fill(data_dir: Path) -> None:
    rec = open_records(data_dir)
    cdrs = []
    for i in range(6):
        a, b = NUMBERS[i % 3], NUMBERS[(i + 1) % 3]
        mos = [4.3, 3.4, 2.8][i % 3]
        leg = Leg("a", ("edge-1",), T0 + i, T0 + i + 2, T0 + i + 90, 200, "bye", ("PCMU/8000",),
                  0, 4500, 45 * (i % 3), 5.0 + 10 * i, mos)  # fmt: skip
        cdrs.append(
            Cdr(call_id=f"e2e-{i}", tenant="default", caller=f"sip:{a}@ims.example", callee=b,
                start_ts=T0 + 60 * i, answer_ts=T0 + 60 * i + 2, end_ts=T0 + 60 * i + 90,
                status=200, disposition="answered", legs=(leg,), codecs=("PCMU/8000",),
                packets=4500, lost=45 * (i % 3), jitter_ms=5.0 + 10 * i, mos_min=mos,
                lineage=Lineage(("edge-1",), 4, (2,), ("assembled:v2",)))
        )  # fmt: skip
    rec.store.write(cdrs)
    rec.close()


@contextlib.contextmanager
def _serve(tmp_path: Path, *extra: str) -> Iterator[str]:
    data = tmp_path / "var"
    _fill(data)
    port = _free_port()
    proc = subprocess.Popen(
        [_callward(), "web", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data),
         *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/api/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
                raise AssertionError(f"callward web exited: {err}")
            if time.monotonic() > deadline:
                raise AssertionError("callward web did not answer /api/v1/health within 30 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
    # the one start-up line names where it listens (no access log: it would carry call ids)
    assert f"dashboard {url}/" in err.decode(), err.decode()[-500:]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with _serve(tmp_path) as url:
        yield url


def _playwright() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"why: {CHROMIUM} not installed (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="why: playwright not installed")


def test_dashboard_in_headless_chromium(server: str, tmp_path: Path) -> None:
    sync_api = _playwright()
    data_dir = tmp_path / "var"  # the server fixture's records
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/", wait_until="domcontentloaded", timeout=20_000)

            # calls table: six rows, pseudonyms, never the stored numbers
            rows = page.locator("#calls-table tbody tr")
            assert rows.count() == 6
            table = page.locator("#calls-table").inner_text()
            for n in NUMBERS:
                assert n not in table and n[1:] not in table
            # no MSISDN-like digit run outside the pseudonyms (hex, which can be all digits)
            assert not re.search(r"\d{9,}", re.sub(r"pn:[0-9a-f]+", "pn:", table))
            assert len(re.findall(r"pn:[0-9a-f]{12}", table)) == 12
            assert rows.first.locator("td").nth(2).inner_text().startswith("e2e-5")  # newest first

            # charts: MOS/jitter/loss, one bar per call
            assert page.locator("svg.chart").count() == 3
            assert page.locator("svg.chart rect.bar").count() == 18

            # audit badge: the page load itself was recorded, and the chain verifies
            badge = page.locator("#audit-status")
            badge.filter(has_text="intact").wait_for(timeout=10_000)
            assert re.search(r"intact \(\d+ entr(y|ies)\)", badge.inner_text())

            # planner: G.711 at 30 ms over IPv6 with SRTP 80-bit tags, 2 minutes.
            # By hand: 240 B payload + RTP 12 + UDP 8 + IPv6 40 + tag 10 = 310 B;
            # 33.333 pkt/s -> 620,000 B/min. RTCP (RFC 3550 §6.2, A.7): SR with one block 52 B
            # + SDES 28 B + SRTCP index/tag 14 B + IPv6/UDP 48 B = 142 B every 5 s / (e - 1.5)
            # on average, the first after half of that; RR + BYE (16 + 14 + 48 B) at the end.
            page.select_option("select[name=codec]", "pcma")
            page.fill("input[name=ptime_ms]", "30")
            page.select_option("select[name=ip_version]", "6")
            page.fill("input[name=minutes]", "2")
            page.click("#plan-form button[type=submit]")
            result = page.locator("#plan-table")
            result.wait_for(timeout=10_000)
            text = result.inner_text()
            mean = 5 / (math.e - 1.5)
            rtcp_per_min = (1 + (60 - mean / 2) / mean) * 142 + 78
            per_min = round(310 * (1000 / 30) * 60 + rtcp_per_min)
            assert f"{per_min:,}" in text, text
            assert f"{2 * 2 * per_min / 1e6:.3f} MB" in text, text

            # a refused value shows the API's one-line error, not a broken page
            page.fill("input[name=ptime_ms]", "7")
            page.click("#plan-form button[type=submit]")
            page.locator("#plan-result .error").wait_for(timeout=10_000)
            assert "ptime_ms" in page.locator("#plan-result .error").inner_text()

            # call detail: needs a reason and a ticket; the read then shows legs and lineage
            page.click("button.open-call[data-call-id='e2e-2']")
            assert page.input_value("#detail-form input[name=call_id]") == "e2e-2"
            page.click("#detail-form button[type=submit]")
            page.locator("#detail-result .error").wait_for(timeout=10_000)
            assert "X-Callward-Ticket" in page.locator("#detail-result .error").inner_text()
            page.fill("#detail-form input[name=reason]", "customer reports choppy audio")
            page.fill("#detail-form input[name=ticket]", "INC-7")
            page.click("#detail-form button[type=submit]")
            page.locator("#detail-legs").wait_for(timeout=10_000)
            legs = page.locator("#detail-legs").inner_text()
            assert "edge-1" in legs and "2.80" in legs
            summary = page.locator("#detail-summary").inner_text()
            assert "critical" in summary and "served:web" in summary
            assert not any(n in summary for n in NUMBERS)

            # capture analysis: upload a pcap written by the quality area's synthetic writer
            # (500 packets, 25 dropped) and get the per-stream table and the PNG plot
            pcap = tmp_path / "call.pcap"
            write_pcap(pcap, rtp_frames(RtpSpec(count=500, bursts=[(200, 25)])))
            page.set_input_files("input[name=capture]", str(pcap))
            page.click("#capture-form button[type=submit]")
            page.locator("#capture-plot").wait_for(timeout=30_000)
            cap = page.locator("#capture-table").inner_text()
            assert "0x11223344" in cap and "10.0.0." not in cap
            assert re.search(r"\b475\b\s+25\b", cap), cap  # packets, lost
            assert page.eval_on_selector("#capture-plot", "img => img.naturalWidth") > 300

            shot = tmp_path / "dashboard.png"  # kept by pytest under its basetemp for a look
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert errors == []
        finally:
            browser.close()
    # the detail read is in the audit trail with who/why/ticket (checked in the store itself)
    rec = open_records(data_dir)
    try:
        reads = [e for e in rec.audit.entries() if e.ticket == "INC-7"]
        assert [(e.actor, e.reason, e.records) for e in reads] == [
            ("web:anonymous", "customer reports choppy audio", ("e2e-2",))
        ]
        assert rec.audit.verify() == []
    finally:
        rec.close()


def test_sign_in_and_reveal_as_investigator(tmp_path: Path) -> None:
    """With tokens configured the browser signs in (HttpOnly SameSite cookie); only the
    investigator role can reveal a number, and only with a reason and a ticket."""
    sync_api = _playwright()
    settings = tmp_path / "web.yaml"
    digest = hashlib.sha256(b"let-me-in").hexdigest()
    settings.write_text(
        f"tokens:\n  'sha256:{digest}': {{actor: ivan@legal, role: investigator}}\n",
        encoding="utf-8",
    )
    with (
        _serve(tmp_path, "--settings", str(settings)) as url,
        sync_api.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            resp = page.goto(url + "/", wait_until="domcontentloaded", timeout=20_000)
            assert resp is not None and resp.status == 401
            assert page.locator("#calls-table").count() == 0
            page.fill("#login-form input[name=token]", "wrong")
            page.click("#login-form button[type=submit]")
            page.locator("#login-result .error").wait_for(timeout=10_000)
            page.fill("#login-form input[name=token]", "let-me-in")
            page.click("#login-form button[type=submit]")
            page.locator("#calls-table").wait_for(timeout=10_000)
            assert "ivan@legal (investigator)" in page.locator("header").inner_text()
            cookie = next(c for c in page.context.cookies() if c["name"] == "callward_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert not any(n in page.locator("#calls-table").inner_text() for n in NUMBERS)

            page.click("button.open-call[data-call-id='e2e-0']")
            page.fill("#detail-form input[name=reason]", "court order 12/2026")
            page.fill("#detail-form input[name=ticket]", "LEGAL-9")
            page.check("#detail-form input[name=reveal]")
            page.click("#detail-form button[type=submit]")
            page.locator("#detail-summary").wait_for(timeout=10_000)
            # e2e-0 is NUMBERS[0] (as a SIP URI) calling NUMBERS[1]
            summary = page.locator("#detail-summary").inner_text()
            assert NUMBERS[0] in summary and NUMBERS[1] in summary

            page.click("#sign-out")
            page.locator("#login-form").wait_for(timeout=10_000)
        finally:
            browser.close()
    rec = open_records(tmp_path / "var")
    try:
        (e,) = [e for e in rec.audit.entries() if e.ticket == "LEGAL-9"]
        assert (e.actor, e.records) == ("ivan@legal", ("e2e-0",))
        assert json.loads(e.detail)["revealed"] is True
    finally:
        rec.close()
