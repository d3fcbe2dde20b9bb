"""`callward cdr ...` (query, export, purge, hold, audit, move-cold); the privacy commands are
in :mod:`callward.cli.privacy`.

Every read of CDRs needs ``--actor``, ``--reason`` and ``--ticket`` and writes an audit entry
before anything is printed. Exit codes: 0 ok, 1 finding (tampered trail, plaintext found),
2 bad input (one line on stderr).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from callward.cli.exits import fail as _fail
from callward.errors import CallwardError

cdr_app = typer.Typer(help="Call detail records: query, export, purge, holds, audit.")
hold_app = typer.Typer(help="Legal holds that suspend purging of matching CDRs.")
audit_app = typer.Typer(help="The hash-chained CDR access audit trail.")
cdr_app.add_typer(hold_app, name="hold")
cdr_app.add_typer(audit_app, name="audit")

DATA_DIR = typer.Option(None, "--data-dir", help="data directory (default: storage.data_dir)")
CONFIG = typer.Option(None, "--config", help="callward.yaml")
JSON = typer.Option(False, "--json", help="print JSON")
ACTOR = typer.Option(..., "--actor", help="who is accessing (recorded in the audit trail)")
REASON = typer.Option(..., "--reason", help="stated purpose (recorded in the audit trail)")
TICKET = typer.Option(..., "--ticket", help="ticket/case reference (recorded)")


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Our own errors (bad config, store, policy) end the command with one line on stderr and
    exit 2; anything else is a bug and keeps its traceback."""
    try:
        yield
    except CallwardError as exc:
        raise _fail(str(exc)) from None


def _open(data_dir: Path | None, config: Path | None) -> Any:
    from callward.config import load_config
    from callward.records.service import open_records

    with _store_errors():
        cfg = load_config(config)
        return open_records(
            data_dir or cfg.storage.data_dir, cfg.records, cfg.storage.postgres_url, cfg.privacy
        )


def _when(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"{name} {text!r}: expected epoch seconds or ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _emit(data: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        for line in lines:
            typer.echo(line)


@cdr_app.command("query")
def cdr_query(
    subject: str | None = typer.Option(None, "--subject", help="MSISDN or URI"),
    tenant: str | None = typer.Option(None, "--tenant"),
    since: str | None = typer.Option(None, "--since", help="epoch or ISO 8601 (UTC)"),
    until: str | None = typer.Option(None, "--until", help="epoch or ISO 8601 (UTC)"),
    limit: int = typer.Option(50, "--limit", min=1),
    reveal: bool = typer.Option(False, "--reveal", help="print identifiers in clear"),
    actor: str = ACTOR,
    reason: str = REASON,
    ticket: str = TICKET,
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Find CDRs in hot and cold storage (audited read)."""
    from callward.records.audit import AuditedReader
    from callward.records.export import mask_party
    from callward.records.rows import CdrQuery
    from callward.records.schema import cdr_to_dict

    q = CdrQuery(tenant, subject, (), _when(since, "--since"), _when(until, "--until"), None, limit)
    rec = _open(data_dir, config)
    with _store_errors():
        found = AuditedReader(rec.tiered, rec.audit, actor).query(q, reason, ticket)
    rows = []
    for c in found:
        d = cdr_to_dict(c)
        if not reveal:
            d["caller"], d["callee"] = mask_party(c.caller), mask_party(c.callee)
        rows.append(d)
    lines = [
        f"{d['call_id']}  {dt.datetime.fromtimestamp(d['start_ts'], dt.UTC):%Y-%m-%d %H:%M:%S}"
        f"  {d['caller']} -> {d['callee']}  {d['disposition']} {d['status']}"
        f"  mos={d['mos_min']}"
        for d in rows
    ] + [f"{len(rows)} record(s); access recorded in the audit trail"]
    _emit(rows, as_json, lines)
    rec.close()


@cdr_app.command("export")
def cdr_export(
    subject: str = typer.Option(..., "--subject", help="the data subject's MSISDN or URI"),
    fmt: str = typer.Option("json", "--format", help="json | csv"),
    out: Path | None = typer.Option(None, "--out", help="write to a file instead of stdout"),
    actor: str = ACTOR,
    reason: str = typer.Option("data subject request (GDPR Art. 15/20)", "--reason"),
    ticket: str = TICKET,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Portability export of one subject's CDRs (format: docs/privacy.md)."""
    from callward.records.audit import AuditedReader
    from callward.records.export import export_csv, export_json
    from callward.records.rows import CdrQuery

    if fmt not in ("json", "csv"):
        raise _fail(f"--format {fmt!r}: expected json or csv")
    rec = _open(data_dir, config)
    with _store_errors():
        found = AuditedReader(rec.tiered, rec.audit, actor).query(
            CdrQuery(subject=subject), reason, ticket, action="export"
        )
    text = export_json(subject, found, time.time()) if fmt == "json" else export_csv(subject, found)
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{len(found)} record(s) written to {out}", err=True)
    rec.close()


@cdr_app.command("purge")
def cdr_purge(
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would go and why"),
    now: str | None = typer.Option(None, "--now", help="evaluate as of this time"),
    actor: str = typer.Option("retention-cli", "--actor"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Apply retention to CDRs (hot, cold, aggregates); legal holds suspend matching records.
    `callward privacy retention run` covers every store."""
    from callward.cli.privacy import run_retention

    at = _when(now, "--now") or time.time()
    rec = _open(data_dir, config)
    try:
        run_retention(rec, config, at, dry_run, actor, as_json, only=("cdr", "cdr-aggregates"))
    finally:
        rec.close()


@cdr_app.command("move-cold")
def cdr_move_cold(
    older_than_days: float | None = typer.Option(None, "--older-than-days"),
    actor: str = typer.Option("retention-cli", "--actor"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Move aged CDRs from the hot store to day-partitioned Parquet (audited)."""
    from callward.records.cold import move_aged

    rec = _open(data_dir, config)
    days = older_than_days if older_than_days is not None else rec.config.hot_days
    cold = rec.cold
    n = move_aged(rec.store, cold, time.time() - days * 86400.0)
    if n:
        rec.audit.record(actor, "move", f"older than {days:g} d", "retention-policy",
                         detail=json.dumps({"moved": n}))  # fmt: skip
    _emit({"moved": n, "cold": str(cold.root)}, as_json, [f"moved {n} CDR(s) to {cold.root}"])
    rec.close()


@cdr_app.command("import")
def cdr_import(
    file: Path = typer.Argument(..., help="JSON lines, one CDR per line, any schema version"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Import CDRs written by any schema version (v1 records are migrated to v2)."""
    from callward.records.schema import read_cdr

    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise _fail(f"{file}: cannot read: {exc.strerror}") from None
    cdrs = []
    versions: dict[int, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            cdrs.append(read_cdr(data))
        except (ValueError, CallwardError) as exc:
            raise _fail(f"{file}:{n}: not a CDR: {exc}") from None
        v = int(data.get("schema_version", 1))
        versions[v] = versions.get(v, 0) + 1
    rec = _open(data_dir, config)
    n = rec.store.write(cdrs)
    rec.close()
    per = ", ".join(f"v{k}: {v}" for k, v in sorted(versions.items()))
    _emit({"imported": n, "by_version": versions}, as_json, [f"imported {n} CDR(s) ({per})"])


@cdr_app.command("consume")
def cdr_consume(
    nats_url: str | None = typer.Option(None, "--nats", help="default: storage.nats_url"),
    stream: str = typer.Option("CALLWARD_EVENTS", "--stream"),
    prefix: str = typer.Option("callward.events", "--prefix"),
    durable: str = typer.Option("cdr-writer", "--durable"),
    idle_exit: float | None = typer.Option(None, "--idle-exit", help="stop after N idle s"),
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Consume events from NATS JetStream and write CDRs (durable, ack after commit)."""
    import asyncio

    from callward.config import load_config
    from callward.records.bus import CdrConsumer, connect, ensure_stream

    url = nats_url or load_config(config).storage.nats_url
    if not url:
        raise _fail("no NATS URL: pass --nats or set storage.nats_url")
    rec = _open(data_dir, config)

    async def run() -> CdrConsumer:
        nc = await connect(url)
        try:
            js = nc.jetstream()
            await ensure_stream(js, stream, prefix)
            cfg = rec.config
            consumer = CdrConsumer(
                js, stream, durable, rec.store, prefix=prefix,
                grace_s=cfg.grace_s, timeout_s=cfg.timeout_s,
            )  # fmt: skip
            consumer.recover()
            await consumer.run(asyncio.Event(), idle_exit_s=idle_exit)
            return consumer
        finally:
            await nc.close()

    import nats

    try:
        done = asyncio.run(run())
    except (CallwardError, OSError, nats.errors.Error) as exc:
        raise _fail(f"NATS consumer: {exc}") from None
    except KeyboardInterrupt:
        rec.close()
        return
    typer.echo(f"acked {done.acked} event(s), wrote {done.written} CDR(s)")
    rec.close()


@hold_app.command("place")
def hold_place(
    reason: str = REASON,
    ticket: str = TICKET,
    actor: str = ACTOR,
    days: float = typer.Option(..., "--days", help="expiry, days from now"),
    subject: str | None = typer.Option(None, "--subject"),
    tenant: str | None = typer.Option(None, "--tenant"),
    call_id: list[str] = typer.Option([], "--call-id"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Place a legal hold (audited)."""
    import dataclasses

    rec = _open(data_dir, config)
    with _store_errors():
        pn = rec.codec.pseudonym(subject).hex() if subject else ""
        h = rec.holds.place(actor=actor, reason=reason, ticket=ticket, days=days,
                            now=time.time(), subject_pn=pn, tenant=tenant or "",
                            call_ids=call_id)  # fmt: skip
    _emit(dataclasses.asdict(h), as_json, [f"hold {h.hold_id} placed until {h.expires:.0f}"])
    rec.close()


@hold_app.command("list")
def hold_list(
    as_json: bool = JSON, data_dir: Path | None = DATA_DIR, config: Path | None = CONFIG
) -> None:
    """Active legal holds."""
    import dataclasses

    rec = _open(data_dir, config)
    holds = rec.holds.active(time.time())
    lines = [f"{h.hold_id}  {h.ticket}  {h.reason}  expires {h.expires:.0f}" for h in holds]
    _emit([dataclasses.asdict(h) for h in holds], as_json, lines)
    rec.close()


@hold_app.command("release")
def hold_release(
    hold_id: str = typer.Argument(...),
    reason: str = REASON,
    ticket: str = TICKET,
    actor: str = ACTOR,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Release a legal hold before it expires (audited)."""
    rec = _open(data_dir, config)
    with _store_errors():
        rec.holds.release(hold_id, actor=actor, reason=reason, ticket=ticket, now=time.time())
    typer.echo(f"hold {hold_id} released")
    rec.close()


@audit_app.command("verify")
def audit_verify(
    as_json: bool = JSON, data_dir: Path | None = DATA_DIR, config: Path | None = CONFIG
) -> None:
    """Verify the hash chain and head anchor; exit 1 when tampering is found."""
    rec = _open(data_dir, config)
    problems = rec.audit.verify()
    n = len(rec.audit.entries())
    rec.close()
    _emit({"entries": n, "ok": not problems, "problems": problems}, as_json,
          [f"audit trail: {n} entries, " + ("intact" if not problems else "TAMPERED"),
           *problems])  # fmt: skip
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``cdr`` and ``privacy`` to the root app."""
    app.add_typer(cdr_app, name="cdr")
