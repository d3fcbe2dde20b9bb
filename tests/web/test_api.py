"""REST API over a real SQLite store filled through the records API.

References are independent of the web code: pseudonyms are recomputed with HMAC-SHA-256 over the
key file (GDPR-style keyed pseudonym, callward.privacy.pseudonym's documented construction),
page order is Python's sort of what was written, byte counts are RFC 3550/3711 header
arithmetic done by hand, and the audit chain is checked entry by entry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.web.conftest import ALICE, BOB, CAROL, T0, TOKENS, make_cdr

from callward.config import CallwardConfig, QualityConfig, TenantQuality
from callward.records import CdrQuery
from callward.records.service import Records
from callward.usage.planner import CODECS, SRTP_TAG_BYTES
from callward.web.schemas import PlanRequest
from callward.web.settings import Principal, WebSettings

HEADERS = {"X-Callward-Reason": "customer complaint: choppy audio", "X-Callward-Ticket": "INC-42"}
MSISDN_RE = re.compile(r"\+?447700900\d{3}")


def pseudonym_ref(records: Records, subject_digits: str) -> str:
    key = (records.data_dir / "keys" / "pseudonym.key").read_bytes()
    return "pn:" + hmac.new(key, subject_digits.encode(), hashlib.sha256).digest()[:16].hex()


def test_calls_list_shows_pseudonyms_not_numbers(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(1), make_cdr(2, caller=CAROL, callee=ALICE)])
    r = client.get("/api/v1/calls")
    assert r.status_code == 200
    assert not MSISDN_RE.search(r.text)
    calls = r.json()["calls"]
    assert [c["call_id"] for c in calls] == ["call-0002", "call-0001"]
    # CAROL's SIP URI with user=phone is the same subject as the bare number (RFC 3261 §19.1.1)
    assert calls[0]["caller"] == pseudonym_ref(records, "+447700900303")
    assert calls[0]["callee"] == pseudonym_ref(records, ALICE)
    assert calls[1]["caller"] == pseudonym_ref(records, ALICE)
    assert calls[1]["callee"] == pseudonym_ref(records, BOB)
    assert calls[1]["loss_pct"] == pytest.approx(100 * 30 / 3030, abs=1e-3)


def _all_pages(client: TestClient, limit: int, **params: str) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(1000):
        q: dict[str, str | int] = {"limit": limit, **params}
        if cursor:
            q["cursor"] = cursor
        body = client.get("/api/v1/calls", params=q).json()
        seen += [c["call_id"] for c in body["calls"]]
        assert len(body["calls"]) <= limit
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


def test_pages_walk_every_call_newest_first_once(records: Records, client: TestClient) -> None:
    # bursts, gaps of days, and ties on start_ts (ordered by call id within a tie)
    starts = (
        [T0 + i for i in range(30)] + [T0 + 86400 * 5] * 7 + [T0 - 86400 * 40 + i for i in range(9)]
    )
    cdrs = [make_cdr(i, start=s) for i, s in enumerate(starts)]
    records.store.write(cdrs)
    expect = [c.call_id for c in sorted(cdrs, key=lambda c: (c.start_ts, c.call_id), reverse=True)]
    for limit in (1, 3, 7, 20, 200):
        assert _all_pages(client, limit) == expect


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    offsets=st.lists(st.integers(0, 3_000_000), min_size=0, max_size=40),
    limit=st.integers(1, 9),
)
def test_pagination_property(
    records: Records, client: TestClient, offsets: list[int], limit: int
) -> None:
    records.store.delete([c.call_id for c in records.store.query(CdrQuery())])
    cdrs = [make_cdr(i, start=T0 + off / 10) for i, off in enumerate(offsets)]
    records.store.write(cdrs)
    expect = [c.call_id for c in sorted(cdrs, key=lambda c: (c.start_ts, c.call_id), reverse=True)]
    assert _all_pages(client, limit) == expect


def test_call_detail_needs_reason_and_ticket(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(1)])
    before = len(records.audit.entries())
    for headers in (
        {},
        {"X-Callward-Reason": "x"},
        {"X-Callward-Ticket": "T-1"},
        {"X-Callward-Reason": "", "X-Callward-Ticket": ""},
    ):
        r = client.get("/api/v1/calls/call-0001", headers=headers)
        assert r.status_code == 400
        assert list(r.json()) == ["error"] and "\n" not in r.json()["error"]
        assert "X-Callward-Ticket" in r.json()["error"]
    blank = client.get("/api/v1/calls/call-0001", headers={**HEADERS, "X-Callward-Ticket": " "})
    assert blank.status_code == 400
    assert len(records.audit.entries()) == before  # refused reads leave no data and no entry


def test_call_detail_is_audited_with_legs_mos_lineage(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(1, mos=3.0), make_cdr(2)])
    r = client.get("/api/v1/calls/call-0001", headers=HEADERS)
    assert r.status_code == 200
    d = r.json()
    assert not MSISDN_RE.search(r.text)
    assert d["caller"] == pseudonym_ref(records, ALICE) and not d["revealed"]
    assert [lg["leg"] for lg in d["legs"]] == ["a", "b"]
    assert d["legs"][0]["mos"] == 3.0 and d["legs"][1]["reinvites"] == 1
    assert d["legs"][0]["loss_pct"] == pytest.approx(1.0 / 1.01, abs=1e-3)
    assert d["lineage"]["nodes"] == ["edge-1", "relay-1"]
    assert d["lineage"]["transformations"][0] == "assembled:v2"
    assert d["lineage"]["transformations"][-1] == "served:web"
    # default thresholds warn < 3.6, critical < 3.1: 3.0 is critical
    assert d["quality"]["level"] == "critical"
    last = records.audit.entries()[-1]
    assert (last.actor, last.action, last.reason, last.ticket) == (
        "web:anonymous", "read", HEADERS["X-Callward-Reason"], "INC-42",
    )  # fmt: skip
    assert last.records == ("call-0001",)
    assert json.loads(last.detail)["endpoint"] == "call"


def test_unknown_call_is_404_and_still_audited(records: Records, client: TestClient) -> None:
    n = len(records.audit.entries())
    r = client.get("/api/v1/calls/nope", headers=HEADERS)
    assert r.status_code == 404 and "error" in r.json()
    entries = records.audit.entries()
    assert len(entries) == n + 1 and entries[-1].records == ()


def test_reveal_needs_investigator_role(
    records: Records, make_client: Callable[..., TestClient]
) -> None:
    records.store.write([make_cdr(1)])
    c = make_client(WebSettings(tokens=TOKENS))
    assert c.get("/api/v1/calls").status_code == 401
    assert c.get("/api/v1/calls", headers={"Authorization": "Bearer wrong"}).status_code == 401
    viewer = {"Authorization": "Bearer viewer-token", **HEADERS}
    r = c.get("/api/v1/calls/call-0001?reveal=true", headers=viewer)
    assert r.status_code == 403
    inv = {"Authorization": "Bearer investigator-token"}
    assert c.get("/api/v1/calls?reveal=true", headers=inv).status_code == 400
    r = c.get("/api/v1/calls/call-0001?reveal=true", headers={**inv, **HEADERS})
    assert r.status_code == 200
    assert (r.json()["caller"], r.json()["callee"], r.json()["revealed"]) == (ALICE, BOB, True)
    last = records.audit.entries()[-1]
    assert last.actor == "ivan@legal" and json.loads(last.detail)["revealed"] is True


def test_sha256_token_entries(records: Records, make_client: Callable[..., TestClient]) -> None:
    digest = "sha256:" + hashlib.sha256(b"s3cret").hexdigest()
    c = make_client(WebSettings(tokens={digest: TOKENS["viewer-token"]}))
    assert (
        c.get("/api/v1/audit/verify", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    )
    assert (
        c.get("/api/v1/audit/verify", headers={"Authorization": "Bearer " + digest}).status_code
        == 401
    )


def test_list_reads_are_audited(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(i) for i in range(5)])
    client.get("/api/v1/calls?limit=2")
    e = records.audit.entries()[-1]
    assert e.records == ("call-0003", "call-0004")
    assert e.action == "read" and e.actor == "web:anonymous" and e.reason and e.ticket
    client.get("/api/v1/calls?limit=2", headers=HEADERS)
    e = records.audit.entries()[-1]
    assert (e.reason, e.ticket) == (HEADERS["X-Callward-Reason"], "INC-42")


def test_quality_summary_distribution_and_alerts(
    records: Records, make_client: Callable[..., TestClient]
) -> None:
    moses = [4.4, 4.0, 3.9, 3.55, 3.2, 3.05, 2.0, 1.2, None]
    cdrs = [make_cdr(i, mos=m) for i, m in enumerate(moses)]
    cdrs.append(make_cdr(20, mos=3.7, tenant="strict"))
    records.store.write(cdrs)
    cfg = CallwardConfig(quality=QualityConfig(tenants={"strict": TenantQuality(mos_warn=3.8)}))
    r = make_client(config=cfg).get("/api/v1/quality/summary")
    assert r.status_code == 200
    s = r.json()
    assert s["calls"] == 10 and s["without_mos"] == 1
    counts = {(b["from"], b["to"]): b["count"] for b in s["distribution"]["bins"]}
    # by hand: 1.2 | 2.0 | 3.05 | 3.2 | 3.55 3.7 | 3.9 4.0 | 4.4
    assert counts == {(1.0, 1.5): 1, (1.5, 2.0): 0, (2.0, 2.5): 1, (2.5, 3.0): 0,
                      (3.0, 3.5): 2, (3.5, 4.0): 3, (4.0, 4.5): 2}  # fmt: skip
    vals = [m for m in moses if m is not None] + [3.7]
    assert s["distribution"]["mean"] == pytest.approx(sum(vals) / len(vals), abs=1e-3)
    assert s["distribution"]["median"] == sorted(vals)[4]  # nearest rank: ceil(0.5*9) = 5th
    levels = {a["call_id"]: a["level"] for a in s["alerts"]}
    assert levels == {"call-0003": "warn", "call-0005": "critical", "call-0006": "critical",
                      "call-0007": "critical", "call-0020": "warn", "call-0004": "warn"}  # fmt: skip
    assert s["by_level"] == {"warn": 3, "critical": 3}
    assert [a["mos"] for a in s["alerts"]] == sorted(a["mos"] for a in s["alerts"])
    assert all(a["cause"] in {"loss", "jitter", "delay", "codec"} for a in s["alerts"])


def test_quality_cause_follows_the_impairment(records: Records, client: TestClient) -> None:
    # 20 % loss on G.711: Ie,eff (loss) dominates; 0 loss with 400 ms jitter: delay (Id) does.
    records.store.write([make_cdr(1, mos=2.0, packets=800, lost=200, jitter=1.0),
                         make_cdr(2, mos=2.0, packets=1000, lost=0, jitter=400.0)])  # fmt: skip
    causes = {
        a["call_id"]: a["cause"] for a in client.get("/api/v1/quality/summary").json()["alerts"]
    }
    assert causes == {"call-0001": "loss", "call-0002": "delay"}


def test_plan_matches_hand_arithmetic(client: TestClient) -> None:
    r = client.post("/api/v1/plan", json={"codec": "pcmu", "minutes": 10})
    assert r.status_code == 200
    body = r.json()
    # G.711 20 ms: 160 B payload + RTP 12 + UDP 8 + IPv4 20 + SRTP tag 10 = 210 B, 50 pkt/s.
    # RTCP (RFC 3550 §6.2, A.7): SR with one block (52 B) + SDES with a 16-character CNAME
    # (28 B) + SRTCP index and tag (14 B) + IPv4/UDP (28 B) = 122 B every 5 s / (e - 1.5) on
    # average, the first after half of that; RR + BYE (16 + 14 + 28 B) at the end.
    mean = 5 / (math.e - 1.5)
    rtcp_per_minute = (1 + (60 - mean / 2) / mean) * 122 + 58
    per_s = 210 * 50 + rtcp_per_minute / 60
    assert body["plan"]["packet_bytes"] == 210
    assert body["plan"]["bytes_per_minute"] == round(per_s * 60)
    assert body["bytes_both_directions"] == round(2 * per_s * 600)
    r = client.post("/api/v1/plan", json={"codec": "opus", "bitrate": 16000, "ptime_ms": 40,
                                          "rohc": True, "srtp": "none", "rtcp": False,
                                          "keepalive": {"method": "crlf", "interval_s": 60}})  # fmt: skip
    body = r.json()
    # 16 kbit/s * 40 ms = 80 B + ROHC 4 B = 84 B at 25 pkt/s. CRLF keep-alive over TCP
    # (RFC 5626 §4.4.1): ping 4 B and pong 2 B each in a segment of IPv4 20 + TCP 32 (with
    # the timestamp option), then the bare ACK of the pong: 56 + 54 + 52 B each minute.
    assert body["plan"]["bytes_per_minute"] == 84 * 25 * 60
    assert body["keepalive"]["bytes_per_hour"] == (56 + 54 + 52) * 60


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"codec": "speex"}, "codec"),
        ({"ptime_ms": 7}, "ptime_ms"),
        ({"voice_activity": 0}, "voice_activity"),
        ({"ip_version": 5}, "ip_version"),
        ({"bitrate": 10}, "bitrate"),
        ({"codec": "pcmu", "extra": 1}, "extra"),
        ({"keepalive": {"method": "crlf", "interval_s": 1}}, "interval_s"),
        ([], "request"),
    ],
)
def test_plan_rejects_bad_input_with_one_line(
    client: TestClient, body: object, needle: str
) -> None:
    r = client.post("/api/v1/plan", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert needle in err and "\n" not in err


def test_plan_models_match_the_planner() -> None:
    fields = PlanRequest.model_fields
    assert set(fields["codec"].annotation.__args__) == set(CODECS)  # type: ignore[union-attr]
    assert set(fields["srtp"].annotation.__args__) == set(SRTP_TAG_BYTES)  # type: ignore[union-attr]


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=12,
)
PLANISH = st.fixed_dictionaries(
    {},
    optional={
        "codec": st.sampled_from([*CODECS, "PCMU", "", "x"]),
        "ptime_ms": st.integers(-10, 200)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=3),
        "bitrate": st.none() | st.integers(-1, 600_000),
        "srtp": st.sampled_from([*SRTP_TAG_BYTES, "bogus"]),
        "ip_version": st.integers(0, 7),
        "rohc": st.booleans() | st.integers(0, 2),
        "voice_activity": st.floats(-1, 2),
        "minutes": st.floats(-5, 1e6),
        "keepalive": st.none()
        | st.fixed_dictionaries(
            {
                "method": st.sampled_from(["crlf", "stun", "x"]),
                "interval_s": st.integers(0, 100_000),
            }
        ),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.one_of(PLANISH, JSONISH))
def test_plan_never_500(client: TestClient, body: object) -> None:
    r = client.post("/api/v1/plan", json=body)
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert "\n" not in r.json()["error"]
    else:
        assert r.json()["bytes_one_direction"] >= 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cursor=st.text(max_size=40)
    | st.binary(max_size=30).map(lambda b: base64.urlsafe_b64encode(b).decode())
)
def test_bad_cursor_is_4xx(client: TestClient, cursor: str) -> None:
    r = client.get("/api/v1/calls", params={"cursor": cursor})
    assert r.status_code in (200, 400, 422), r.text


def test_audit_verify_detects_tampering(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(1)])
    client.get("/api/v1/calls/call-0001", headers=HEADERS)
    client.get("/api/v1/calls")
    ok = client.get("/api/v1/audit/verify").json()
    assert ok["intact"] and ok["entries"] == 2 and ok["problems"] == []
    # independent check of the head: SHA-256(prev || "\n" || body) per audit.py's docstring
    e = records.audit.entries()[-1]
    assert ok["head"] == {
        "seq": e.seq,
        "hash": hashlib.sha256(e.prev_hash.encode() + b"\n" + e.body()).hexdigest(),
    }
    db = sqlite3.connect(records.data_dir / "audit.db")
    db.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = 1")
    db.commit()
    db.close()
    bad = client.get("/api/v1/audit/verify").json()
    assert not bad["intact"] and any("entry 1" in p for p in bad["problems"])
    assert "callward_web_audit_chain_intact 0.0" in client.get("/metrics").text


def test_health(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(1), make_cdr(2)])
    r = client.get("/api/v1/health")
    assert r.status_code == 200 and r.json()["calls_hot"] == 2


def test_metrics_carry_no_personal_data(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(1, caller="sip:+447700900555@10.1.2.3")])
    client.get("/api/v1/calls")
    client.get("/api/v1/calls/call-0001", headers=HEADERS)
    client.get("/api/v1/calls/sip:+447700900555@10.1.2.3", headers=HEADERS)
    client.get("/no/such/+447700900555")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "callward_web_requests_total" in text
    for bad in ("447700900", "10.1.2.3", "call-0001", "pn:", "INC-42", "anonymous"):
        assert bad not in text
    labels = set(re.findall(r'route="([^"]*)"', text))
    assert labels <= {"/api/v1/calls", "/api/v1/calls/{call_id}", "unmatched", "/metrics"}


def test_dashboard_page(records: Records, client: TestClient) -> None:
    records.store.write([make_cdr(i, mos=[4.2, 3.3, None][i % 3]) for i in range(25)])
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not MSISDN_RE.search(html)
    assert pseudonym_ref(records, ALICE)[:15] in html
    assert html.count("<svg") == 3
    assert "default-src 'self'" in r.headers["content-security-policy"]
    # 20 rows per page (settings.page_size): one bar per call in each chart, MOS missing for 1/3
    assert (
        len(re.findall(r'<rect class="bar"', html))
        + len(re.findall(r'<rect class="bar missing"', html))
        == 60
    )
    older = re.search(r'id="older" href="/\?cursor=([^"&]+)"', html)
    assert older
    page2 = client.get("/?cursor=" + older.group(1)).text
    assert "call-0004" in page2 and "call-0005" not in page2
    assert client.get("/static/dashboard.js").status_code == 200


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = set(spec["paths"])
    assert {"/api/v1/calls", "/api/v1/calls/{call_id}", "/api/v1/quality/summary",
            "/api/v1/plan", "/api/v1/audit/verify", "/api/v1/health", "/metrics"} <= paths  # fmt: skip
    params = {p["name"]: p for p in spec["paths"]["/api/v1/calls/{call_id}"]["get"]["parameters"]}
    assert params["X-Callward-Reason"]["required"] and params["X-Callward-Ticket"]["required"]


def test_store_failure_is_503_not_500(records: Records, client: TestClient, tmp_path: Path) -> None:
    records.store._db.close()  # the store goes away under the app
    r = client.get("/api/v1/calls")
    assert r.status_code == 503 and "error" in r.json()


def test_tenant_scoped_principals(records: Records, make_client: Callable[..., TestClient]) -> None:
    records.store.write(
        [make_cdr(1, tenant="acme"), make_cdr(2, tenant="globex"), make_cdr(3, tenant="acme")]
    )
    tokens = {
        "acme": Principal(actor="acme-support", tenants=("acme",)),
        "both": Principal(actor="noc", tenants=("acme", "globex")),
    }
    c = make_client(WebSettings(tokens=tokens))
    acme = {"Authorization": "Bearer acme"}
    ids = [x["call_id"] for x in c.get("/api/v1/calls", headers=acme).json()["calls"]]
    assert ids == ["call-0003", "call-0001"]
    assert c.get("/api/v1/calls?tenant=globex", headers=acme).status_code == 403
    # another tenant's record does not exist for this principal; the attempt is audited
    r = c.get("/api/v1/calls/call-0002", headers={**acme, **HEADERS})
    assert r.status_code == 404
    e = records.audit.entries()[-1]
    assert e.actor == "acme-support" and e.records == () and json.loads(e.detail)["denied"]
    assert c.get("/api/v1/calls/call-0001", headers={**acme, **HEADERS}).status_code == 200
    s = c.get("/api/v1/quality/summary", headers=acme).json()
    assert s["calls"] == 2
    both = {"Authorization": "Bearer both"}
    assert c.get("/api/v1/calls", headers=both).status_code == 400  # must choose a tenant
    assert len(c.get("/api/v1/calls?tenant=globex", headers=both).json()["calls"]) == 1


def test_dashboard_sign_in_with_a_session_cookie(
    records: Records, make_client: Callable[..., TestClient]
) -> None:
    records.store.write([make_cdr(1)])
    c = make_client(WebSettings(tokens=TOKENS))
    r = c.get("/")
    assert r.status_code == 401 and 'id="login-form"' in r.text and "call-0001" not in r.text
    assert c.post("/api/v1/session", json={"token": "nope"}).status_code == 401
    r = c.post("/api/v1/session", json={"token": "investigator-token"})
    assert r.status_code == 204
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    page = c.get("/")
    assert page.status_code == 200 and "ivan@legal (investigator)" in page.text
    assert 'name="reveal"' in page.text  # only investigators get the reveal box
    assert c.get("/api/v1/calls").status_code == 200  # the cookie authenticates the API too
    assert records.audit.entries()[-1].actor == "ivan@legal"
    assert c.delete("/api/v1/session").status_code == 204
    assert c.get("/").status_code == 401


def test_stray_cookie_is_ignored_without_tokens(client: TestClient) -> None:
    client.cookies.set("callward_session", "old-token")
    assert client.get("/").status_code == 200
    assert client.post("/api/v1/session", json={"token": "x"}).status_code == 401
