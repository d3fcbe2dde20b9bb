"""/metrics is behind a token, or answers the management address (loopback) only."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from fastapi.testclient import TestClient

from callward.config import CallwardConfig, SecurityConfig
from callward.metrics_access import MetricsAccess
from callward.records.service import Records
from callward.web.app import create_app


def test_loopback_only_without_token(records: Records) -> None:
    app = create_app(CallwardConfig(), records)
    with TestClient(app, client=("127.0.0.1", 4000)) as local:
        assert local.get("/metrics").status_code == 200
    with TestClient(app, client=("192.0.2.10", 4000)) as remote:
        r = remote.get("/metrics")
        assert r.status_code == 403 and "callward_" not in r.text


def test_token_required_when_configured(records: Records) -> None:
    for configured in ("s3cret-token", "sha256:" + hashlib.sha256(b"s3cret-token").hexdigest()):
        cfg = CallwardConfig(security=SecurityConfig(metrics_token=configured))
        with TestClient(create_app(cfg, records), client=("192.0.2.10", 4000)) as c:
            assert c.get("/metrics").status_code == 401
            bad = c.get("/metrics", headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
            ok = c.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
            assert ok.status_code == 200 and "callward_web_requests" in ok.text


def test_access_rules() -> None:
    check: Callable[[str | None, str | None], int] = MetricsAccess(None, ["10.0.0.0/8"]).check
    assert check(None, "10.1.2.3") == 0
    assert check(None, "11.0.0.1") == 403
    assert check(None, "not-an-ip") == 403 and check(None, None) == 403
    tok = MetricsAccess("t", []).check
    assert tok("Bearer t", "203.0.113.1") == 0 and tok("Basic t", "127.0.0.1") == 401
