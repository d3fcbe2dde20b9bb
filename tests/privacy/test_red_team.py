"""Red team: try to get a subscriber's identifiers out of callward through logs, metrics,
error answers, exports, HEP archives and the web API, and find nothing.

The subject is planted everywhere callward accepts input (SIP URIs, display names, digest
usernames, JSON fields, URL paths, query strings, headers, exception messages), in several
forms (E.164, national format, SIP/TEL URI, IMSI, IMEI, IP)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import structlog
from typer.testing import CliRunner

from callward.cli import app
from callward.config import CallwardConfig
from callward.quality.hep import HepMessage, HepProto, encode_hep
from callward.records.rows import CdrQuery
from callward.records.service import open_records
from callward.records.synthetic import synthetic_cdrs
from callward.web.settings import Principal, Role, WebSettings

MSISDN = "+447700900555"
NATIONAL = "07700 900555"
IMSI = "234150999555123"
IMEI = "353456789012347"
IP = "198.51.100.77"
NAME = "Mallory Example"
FORMS = (MSISDN, MSISDN[1:], "7700900555", NATIONAL, IMSI, IMEI, IP, NAME)


def _clean(text: str, where: str) -> None:
    for form in FORMS:
        assert form not in text, f"{form!r} leaked through {where}"


def test_logs_never_carry_identifiers() -> None:
    from callward.edge.app import configure_logging

    out = io.StringIO()
    configure_logging()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
    log = structlog.get_logger("redteam")
    log.info("invite", caller=f"sip:{MSISDN}@ims.example", detail=f'"{NAME}" <tel:{MSISDN}>')
    log.info(f"reg from {IP}:5060 imsi={IMSI} imei {IMEI}", extra={"msisdn": NATIONAL})
    log.warning("odd", headers=[f"P-Asserted-Identity: <tel:{MSISDN}>",
                                f'Authorization: Digest username="{IMSI}@ims.mnc015.mcc234.3gppnetwork.org"'])  # fmt: skip
    try:
        raise ValueError(f"cannot route {MSISDN} via {IP}")
    except ValueError:
        log.exception("routing failed")
    structlog.reset_defaults()
    _clean(out.getvalue(), "structlog")
    # the standard logging module (web, libraries) goes through the same masking
    import logging

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    std = logging.getLogger("redteam.std")
    std.addHandler(handler)
    std.setLevel(logging.INFO)
    try:
        std.info("lookup %s from %s (%s)", MSISDN, IP, f'"{NAME}" <sip:x@y>')
        std.warning("imsi=%s imei %s national %s", IMSI, IMEI, NATIONAL)
    finally:
        std.removeHandler(handler)
    assert "lookup" in buf.getvalue()
    _clean(buf.getvalue(), "stdlib logging")


def test_web_api_metrics_and_errors(make_client, records) -> None:
    import dataclasses

    cdrs = list(synthetic_cdrs(5, start=1_767_225_600.0))
    cdrs[0] = dataclasses.replace(cdrs[0], caller=f"sip:{MSISDN}@ims.example")
    records.store.write(cdrs)
    tokens = {"v": Principal(actor="viewer", role=Role.VIEWER),
              "d": Principal(actor="dpo", role=Role.DPO)}  # fmt: skip
    c = make_client(WebSettings(tokens=tokens), CallwardConfig())
    h = {"Authorization": "Bearer v"}
    bodies = [
        c.get("/api/v1/calls", headers=h).text,
        c.get(f"/api/v1/calls/{MSISDN}", headers=h).text,
        c.get(
            f"/api/v1/calls/{cdrs[0].call_id}",
            headers={**h, "X-Callward-Reason": NAME, "X-Callward-Ticket": IMSI},
        ).text,
        c.get(f"/api/v1/calls?tenant={MSISDN}", headers=h).text,
        c.get(f"/api/v1/calls?reveal=true&subject={MSISDN}", headers=h).text,
        c.get("/api/v1/governance", headers={"Authorization": "Bearer d"}).text,
        c.get("/api/v1/li/warrants", headers=h).text,
        c.get(f"/nope/{MSISDN}", headers=h).text,
        c.post("/api/v1/plan", headers=h, content=json.dumps({"codec": NAME})).text,
        c.get("/", headers=h).text,
    ]
    for i, b in enumerate(bodies):
        _clean(b, f"web answer #{i}")
    _clean(c.get("/metrics").text, "/metrics")


def test_exports_and_cli_outputs(tmp_path: Path) -> None:
    d = tmp_path / "var"
    rec = open_records(d)
    import dataclasses

    cdrs = list(synthetic_cdrs(60, start=1_767_225_600.0, spacing_s=600.0, subjects=8))
    cdrs[0] = dataclasses.replace(cdrs[0], caller=f"tel:{MSISDN}")
    rec.store.write(cdrs)
    rec.close()
    who = ["--actor", "analyst", "--reason", "r", "--ticket", "t", "--data-dir", str(d)]
    run = CliRunner().invoke
    outs = [
        run(app, ["privacy", "aggregate-export", "--k", "3", "--json", *who]).output,
        run(app, ["cdr", "query", "--json", *who]).output,  # masked without --reveal
        run(app, ["privacy", "retention", "plan", "--json", "--data-dir", str(d)]).output,
        run(app, ["cdr", "audit", "verify", "--json", "--data-dir", str(d)]).output,
        run(app, ["privacy", "minimisation", "--json"]).output,
    ]
    for i, o in enumerate(outs):
        _clean(o, f"CLI output #{i}")
    # the portability export shows the other party masked (third-party data)
    other = json.loads(run(app, ["cdr", "export", "--subject", MSISDN, *who[:2], "--ticket", "t",
                                 "--data-dir", str(d)]).output)  # fmt: skip
    assert other["records"] and all("*" in r["other_party"] for r in other["records"])


def test_hep_archives_logs_and_subscriber_rows_are_erased_and_verified(tmp_path: Path) -> None:
    d = tmp_path / "var"
    open_records(d).close()
    sip = (f'INVITE sip:bob@example.com SIP/2.0\r\nFrom: "{NAME}" <sip:{MSISDN}@ims.example>'
           f";tag=1\r\nContact: <sip:{IMSI}@{IP}:5060>\r\n\r\n").encode()  # fmt: skip
    (d / "hep").mkdir(parents=True)
    (d / "hep" / "day-1.hep").write_bytes(encode_hep(HepMessage(
        IP, 5060, "192.0.2.1", 5060, 1, HepProto.SIP, sip)))  # fmt: skip
    (d / "logs").mkdir()
    (d / "logs" / "edge.log").write_text(f"call from {MSISDN}\nunrelated line\n")
    os.utime(d / "logs" / "edge.log", (1, 1))
    base = ["--data-dir", str(d), "--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text(f"edge: {{subscribers: 'sqlite:{tmp_path}/s.sqlite'}}\n")
    run = CliRunner().invoke
    r = run(app, ["privacy", "verify", "--subject", MSISDN, *base])
    assert r.exit_code == 1  # the red team finds the planted copies first
    r = run(app, ["privacy", "shred", "--subject", MSISDN, "--reason", "Art. 17", "--ticket",
                  "E-9", "--actor", "dpo", *base])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(app, ["privacy", "verify", "--subject", MSISDN, *base])
    assert r.exit_code == 0, r.output
    assert (d / "logs" / "edge.log").read_text() == "[erased]\nunrelated line\n"
    rec = open_records(d)
    assert rec.store.count(CdrQuery()) == 0
    rec.close()
