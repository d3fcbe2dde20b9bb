"""The dashboard's security view (``GET /security``, ``GET /api/v1/security/alerts``).

End to end: ``open_runtime`` (the ``callward serve`` data layer) and an edge on its bus, a
request with sipvicious' User-Agent over UDP, and the alert shows on the web page read from
the store the runtime wrote. Then hostile alert text is escaped, addresses never appear (keyed
pseudonyms only), the 24 h counts leave older alerts out, and a principal bound to a tenant
sees only that tenant's alerts. Port 27090 (safe15's block)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from fastapi.testclient import TestClient

from callward.config import CallwardConfig, EdgeConfig, StorageConfig
from callward.edge.app import EdgeNode
from callward.events import SecurityAlert
from callward.records.security_alerts import SecurityAlertLog, SecurityAlertStore
from callward.runtime import open_runtime
from callward.web import create_app
from callward.web.settings import Principal, Role, WebSettings

ATTACKER_IP = "127.0.0.1"


async def test_an_edge_alert_reaches_the_security_page(tmp_path: Path) -> None:
    cfg = CallwardConfig(
        storage=StorageConfig(data_dir=tmp_path / "var"),
        edge=EdgeConfig(listen=["udp:127.0.0.1:27090"]),
    )
    rt = await open_runtime(cfg)
    node = EdgeNode(cfg, bus=rt.bus)
    await node.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        sock.sendto(
            b"OPTIONS sip:100@callward.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;"
            b"branch=z9hG4bKscan1\r\nMax-Forwards: 70\r\nFrom: <sip:100@x>;tag=1\r\n"
            b"To: <sip:100@callward.local>\r\nCall-ID: scan-1\r\nCSeq: 1 OPTIONS\r\n"
            b"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n",
            ("127.0.0.1", 27090),
        )
        assert rt.security_alerts is not None and rt.security_alerts.store is not None
        for _ in range(100):
            if rt.security_alerts.counts.get("scanner-user-agent"):
                break
            await asyncio.sleep(0.02)
        assert rt.security_alerts.counts.get("scanner-user-agent") == 1
        assert rt.records is not None
        with TestClient(create_app(cfg, rt.records), client=("127.0.0.1", 50000)) as c:
            page = c.get("/security")
            assert page.status_code == 200
            assert "scanner-user-agent" in page.text and "src:" in page.text
            assert ATTACKER_IP not in page.text.replace("127.0.0.1:8", "")  # no address
            api = c.get("/api/v1/security/alerts").json()
            assert api["counts_24h"] == {"scanner-user-agent": 1}
            assert c.get("/").text.count('href="/security"') == 1  # linked from the dashboard
    finally:
        sock.close()
        await node.stop()
        await rt.close()
    mode = (tmp_path / "var" / "security_alerts.sqlite").stat().st_mode & 0o777
    assert mode == 0o600


def test_hostile_text_is_escaped_and_tenants_are_scoped(records, make_client) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    log = SecurityAlertLog(store=SecurityAlertStore(records.data_dir / "security_alerts.sqlite"))
    hostile = '<script>alert("x")</script>\x1b[31m\x00'
    for tenant, ts in (("a", now - 60), ("b", now - 30), ("a", now - 3 * 86400)):
        log.handle(SecurityAlert(ts=ts, node="edge-1", seq=1, tenant=tenant,
                                 rule="cross-tenant", source="198.51.100.66", detail=hostile))  # fmt: skip
    log.store.close()  # type: ignore[union-attr]
    tokens = {
        "ops": Principal(actor="ops", role=Role.VIEWER),
        "tenant-a": Principal(actor="a-admin", role=Role.VIEWER, tenants=("a",)),
    }
    c: TestClient = make_client(WebSettings(tokens=tokens))
    c.app.state.web.clock = time.time  # type: ignore[attr-defined]
    assert c.get("/api/v1/security/alerts").status_code == 401
    page = c.get("/security", headers={"Authorization": "Bearer ops"}).text
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "\x1b" not in page and "\x00" not in page and "198.51.100.66" not in page
    every = c.get("/api/v1/security/alerts", headers={"Authorization": "Bearer ops"}).json()
    assert every["counts_24h"] == {"cross-tenant": 2}  # the 3-day-old alert is out of 24 h
    assert len(every["alerts"]) == 3
    mine = c.get("/api/v1/security/alerts", headers={"Authorization": "Bearer tenant-a"}).json()
    assert {a["tenant"] for a in mine["alerts"]} == {"a"} and mine["counts_24h"] == {
        "cross-tenant": 1
    }
