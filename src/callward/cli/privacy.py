"""`callward privacy ...`: redaction, pseudonyms, erasure (shred) and verification across every
store, key backups, and retention (`privacy retention rules|plan|run`).

Exit codes: 0 ok, 1 finding (plaintext found, policy violated), 2 bad input or config (one line
on stderr; an unknown jurisdiction in the retention config is one of these).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer

from callward.cli.exits import fail as _fail
from callward.cli.records import (
    ACTOR,
    CONFIG,
    DATA_DIR,
    JSON,
    REASON,
    TICKET,
    _emit,
    _open,
    _store_errors,
    _when,
)

privacy_app = typer.Typer(
    help="Redaction, pseudonyms, erasure across every store, key backups, retention."
)
retention_app = typer.Typer(help="Retention rule sets and staged retention over every store.")
consent_app = typer.Typer(help="Recording consent registry (given/withdrawn, with evidence).")
li_app = typer.Typer(help="Lawful interception warrants (X1-like, li-officer role, dual control).")
privacy_app.add_typer(retention_app, name="retention")
privacy_app.add_typer(consent_app, name="consent")
privacy_app.add_typer(li_app, name="li")


def _config(config: Path | None) -> Any:
    from callward.config import load_config

    with _store_errors():
        return load_config(config)


def _setup(rec: Any, config: Path | None) -> tuple[Any, Any, Any]:
    """(config, retention setup, policy), failing closed with exit 2 on a policy gap."""
    from callward.privacy.retention_stores import open_retention

    cfg = _config(config)
    with _store_errors():
        policy = rec.policy(cfg.retention.rule_sets)
        return cfg, open_retention(cfg, rec), policy


def run_retention(
    rec: Any,
    config: Path | None,
    at: float,
    dry_run: bool,
    actor: str,
    as_json: bool,
    only: tuple[str, ...] = (),
) -> None:
    """Plan (and unless ``dry_run`` execute) retention at ``at``; prints the summary."""
    from callward.records.retention import execute_plan, plan_retention

    _, setup, policy = _setup(rec, config)
    stores = [s for s in setup.stores if not only or s.name in only]
    with _store_errors():
        plan = plan_retention(stores, policy, rec.holds.active(at), at)
        summary = plan.summary()
        if dry_run:
            summary["items"] = [
                {"store": i.store, "item": i.label, "tenant": i.tenant, "age_days": i.age_days,
                 "action": i.action, "reason": i.reason, "held_by": list(i.held_by)}
                for i in plan.items
            ]  # fmt: skip
        else:
            summary["done"] = execute_plan(plan, stores, rec.audit, actor)
    setup.close()
    lines = [("DRY RUN: " if dry_run else "") + ", ".join(
        f"{a} {summary[a]}" for a in ("redact", "aggregate", "purge", "held"))]  # fmt: skip
    lines += [f"  {r['count']:>7} {r['store']:<16} {r['action']:<9} {r['reason']}"
              for r in summary["reasons"]]  # fmt: skip
    lines += [f"  conflict: {c}" for c in summary["conflicts"]]
    _emit(summary, as_json, lines)


@retention_app.command("rules")
def retention_rules(
    tenant: str = typer.Option("", "--tenant", help="show the schedule of this tenant"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """The effective schedule (days to redacted/aggregated/purged) per data class."""
    import dataclasses

    from callward.privacy.retention_policy import DATA_CLASSES

    rec = _open(data_dir, config)
    try:
        _, setup, policy = _setup(rec, config)
        setup.close()
        with _store_errors():
            scheds = [policy.schedule(tenant, dc) for dc in DATA_CLASSES]
    finally:
        rec.close()
    jur = ", ".join(policy.jurisdictions(tenant))
    lines = [f"tenant {tenant or '(default)'}: {jur}",
             f"  {'data class':<16} {'redact':>7} {'aggregate':>9} {'purge':>7}"]  # fmt: skip
    lines += [f"  {s.data_class:<16} {s.redact_at:>7g} {s.aggregate_at:>9g} {s.purge_at:>7g}"
              for s in scheds]  # fmt: skip
    lines += [f"  conflict: {c}" for s in scheds for c in s.conflicts]
    _emit([dataclasses.asdict(s) for s in scheds], as_json, lines)


@retention_app.command("plan")
def retention_plan(
    now: str | None = typer.Option(None, "--now", help="evaluate as of this time"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """What a retention run would do to every store, and under which rule (changes nothing)."""
    at = _when(now, "--now") or time.time()
    rec = _open(data_dir, config)
    try:
        run_retention(rec, config, at, True, "retention-cli", as_json)
    finally:
        rec.close()


@retention_app.command("run")
def retention_run(
    now: str | None = typer.Option(None, "--now", help="evaluate as of this time"),
    actor: str = typer.Option("retention-cli", "--actor"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Apply retention to every store (CDRs, aggregates, logs, captures, HEP, location,
    subscribers, recordings, consent evidence)."""
    at = _when(now, "--now") or time.time()
    rec = _open(data_dir, config)
    try:
        run_retention(rec, config, at, False, actor, as_json)
    finally:
        rec.close()


@privacy_app.command("redact")
def privacy_redact(
    file: Path | None = typer.Argument(None, help="text file (default stdin)"),
) -> None:
    """Mask MSISDNs, IMSIs, IP addresses and SIP/TEL URIs in text (e.g. a log file)."""
    from callward.privacy.redact import redact_text

    try:
        stream = file.open(encoding="utf-8", errors="replace") if file else sys.stdin
    except OSError as exc:
        raise _fail(f"{file}: cannot read: {exc.strerror}") from None
    for line in stream:
        sys.stdout.write(redact_text(line.rstrip("\n")) + "\n")


@privacy_app.command("pseudonym")
def privacy_pseudonym(
    subject: str = typer.Argument(...),
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Print the keyed pseudonym of a subject (for support tickets, holds, audit lookups)."""
    rec = _open(data_dir, config)
    with _store_errors():
        typer.echo(rec.codec.pseudonym(subject).hex())
    rec.close()


@privacy_app.command("shred")
def privacy_shred(
    subject: str = typer.Option(..., "--subject"),
    reason: str = REASON,
    ticket: str = TICKET,
    actor: str = ACTOR,
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Erase a subject from every store: CDR keys crypto-shredded (hot, cold and backup copies
    become unreadable), subscriber rows (SQLite or PostgreSQL), identity directory rows, web
    phone state (preferences, presence, watch lists, quotas) and sessions, location bindings,
    log lines and captures naming them.
    Refused (exit 2) while a legal hold covers the subject."""
    import json

    from callward.privacy.retention_stores import CdrKeyErasure, erase_subject

    rec = _open(data_dir, config)
    try:
        _, setup, _ = _setup(rec, config)
        with _store_errors():
            now = time.time()
            stores = [CdrKeyErasure(rec.keys, f"{reason} [{ticket}]"), *setup.erasables]
            pseudo = rec.codec.cipher.pseudonymizer
            pn = pseudo.pseudonym(subject)
            erase_subject(subject, pseudo, [], rec.holds.active(now), now)  # hold check first
            rec.audit.record(actor, "shred", reason, ticket, subject=pn)
            report = erase_subject(subject, pseudo, stores, rec.holds.active(now), now)
            rec.audit.record(actor, "shred", "erasure done", ticket, subject=pn,
                             detail=json.dumps(report.per_store, sort_keys=True))  # fmt: skip
        setup.close()
    finally:
        rec.close()
    per = ", ".join(f"{k} {v}" for k, v in report.per_store.items())
    line = f"subject {pn[:12]}… erased ({per}); run `callward privacy verify` to check"
    _emit({"pseudonym": pn, "erased": report.per_store}, as_json, [line])


@privacy_app.command("verify")
def privacy_verify(
    subject: str = typer.Option(..., "--subject"),
    extra: list[Path] = typer.Option([], "--path", help="more files/dirs (backups)"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Search every store callward writes (CDR database and WAL or the PostgreSQL CDR schema,
    cold Parquet, aggregates, subscriber database (SQLite or PostgreSQL), identity directory,
    web phone state and sessions, logs, captures, HEP archives, Redis location, given paths)
    for plaintext of a subject;
    exit 1 when any is found."""
    import dataclasses

    from callward.privacy.shred import PlaintextFinding, subject_needles, verify_no_plaintext
    from callward.privacy.subscriber_retention import postgres_plaintext

    rec = _open(data_dir, config)
    try:
        _, setup, _ = _setup(rec, config)
        # no checkpoint first: the WAL is scanned as it is, superseded frames included
        with _store_errors():
            paths = [Path(rec.store.path) if hasattr(rec.store, "path") else rec.data_dir,
                     rec.cold.root, *setup.scan_paths, *extra]  # fmt: skip
            found = verify_no_plaintext(dict.fromkeys(paths), subject)
            needles = subject_needles(subject)
            if setup.location is not None:
                hits = setup.location.plaintext(needles)
                found += [PlaintextFinding("redis", h, "location") for h in hits]
            for store in setup.linked:  # phone-state rows of the subject's OAuth subject/AOR
                found += [PlaintextFinding(str(store.path), h, store.name)
                          for h in store.plaintext(needles)]  # fmt: skip
            if setup.subscribers.pg:
                found += [PlaintextFinding("postgresql", h, "subscriber")
                          for h in setup.subscribers.plaintext(needles)]  # fmt: skip
            for url, schemas in setup.postgres:  # the CDR schema and its event journal
                found += [PlaintextFinding("postgresql", h, "row text")
                          for h in postgres_plaintext(url, schemas, needles)]  # fmt: skip
        setup.close()
    finally:
        rec.close()
    _emit([dataclasses.asdict(f) for f in found], as_json,
          [f"{f.path}: {f.where} ({f.needle_kind})" for f in found]
          or ["no plaintext of the subject found"])  # fmt: skip
    if found:
        raise typer.Exit(1)


def _backup_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise _fail(f"{path}: cannot read backup key: {exc.strerror}") from None
    if len(key) != 32:
        raise _fail(f"{path}: expected a 32-byte backup key")
    return key


@privacy_app.command("backup-keys")
def privacy_backup_keys(
    out: Path = typer.Option(..., "--out"),
    backup_key: Path = typer.Option(..., "--backup-key", help="32-byte backup KEK file"),
    actor: str = typer.Option("key-admin", "--actor"),
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Envelope-encrypted backup of every subject key, the shred ledger and the pseudonym key:
    with the backup KEK alone it restores into an empty data directory."""
    from callward.privacy.key_backup import backup_keys

    kek = _backup_key(backup_key)
    rec = _open(data_dir, config)
    try:
        with _store_errors():
            n = backup_keys(rec.keys, out, kek, pseudonym_key=rec.codec.cipher.pseudonymizer.key)
            rec.audit.record(actor, "backup", "key backup", "key-management",
                             detail=f'{{"keys": {n}}}')  # fmt: skip
    finally:
        rec.close()
    typer.echo(f"{n} key(s) backed up to {out}")


@privacy_app.command("restore-keys")
def privacy_restore_keys(
    backup: Path = typer.Argument(...),
    backup_key: Path = typer.Option(..., "--backup-key"),
    actor: str = typer.Option("key-admin", "--actor"),
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Restore subject keys (and the pseudonym key into an empty data directory) from a backup;
    erased subjects stay erased. Keys are re-wrapped under the current master key."""
    from callward.privacy.key_backup import read_backup, restore_keys
    from callward.privacy.kms import install_pseudonym_key, open_kms

    kek = _backup_key(backup_key)
    cfg = _config(config)
    d = data_dir or cfg.storage.data_dir
    with _store_errors():
        payload = read_backup(backup, kek)
        if payload.pseudonym_key is not None:
            ring = open_kms(cfg.privacy, Path(d) / "keys")
            install_pseudonym_key(ring, Path(d) / "keys", cfg.privacy.kms == "file",
                                  payload.pseudonym_key)  # fmt: skip
    rec = _open(data_dir, config)
    try:
        with _store_errors():
            n = restore_keys(rec.keys, backup, kek)
            rec.audit.record(actor, "restore", "key restore", "key-management",
                             detail=f'{{"keys": {n}}}')  # fmt: skip
    finally:
        rec.close()
    typer.echo(f"{n} key(s) restored")


@privacy_app.command("rotate-master")
def privacy_rotate_master(
    keep_old: bool = typer.Option(False, "--keep-old", help="do not retire the old key files"),
    actor: str = typer.Option("key-admin", "--actor"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """New master key (file KMS), then every subject key re-wrapped under it in small
    transactions while services keep running; the old key files are zeroed and removed."""
    from callward.privacy.kms import retire_file_keks, rotate_file_ring

    cfg = _config(config)
    if cfg.privacy.kms != "file":
        raise _fail("rotate-master: privacy.kms = pkcs11: create the new key in the token and "
                    "set privacy.pkcs11_key_label; KeyStore.rewrap moves the keys")  # fmt: skip
    keys_dir = Path(data_dir or cfg.storage.data_dir) / "keys"
    rec = _open(data_dir, config)  # creates the first master key on a fresh data directory
    rec.close()
    with _store_errors():
        kid = rotate_file_ring(keys_dir)
    rec = _open(data_dir, config)
    try:
        with _store_errors():
            n = rec.keys.rewrap()
            retired = [] if keep_old else retire_file_keks(keys_dir, kid)
            rec.audit.record(actor, "rotate", "master key rotation", "key-management",
                             detail=f'{{"kek": "{kid}", "rewrapped": {n}}}')  # fmt: skip
    finally:
        rec.close()
    line = f"master key {kid}: {n} subject key(s) re-wrapped; retired {retired or 'none'}"
    _emit({"kek": kid, "rewrapped": n, "retired": retired}, as_json, [line])


def _consent(rec: Any) -> Any:
    from callward.privacy.consent import ConsentRegistry

    return ConsentRegistry(rec.data_dir / "consent.db", rec.codec.cipher.pseudonymizer, rec.audit)


@consent_app.command("set")
def consent_set(
    subject: str = typer.Option(..., "--subject"),
    jurisdiction: str = typer.Option(..., "--jurisdiction", help="US-FED, US-NY, US-CA, GDPR, UK"),
    given: bool = typer.Option(..., "--given/--withdrawn"),
    evidence: str = typer.Option(..., "--evidence", help="IVR prompt id, form, ticket"),
    actor: str = ACTOR,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Record consent given or withdrawn (audited; the latest entry wins)."""
    rec = _open(data_dir, config)
    try:
        reg = _consent(rec)
        with _store_errors():
            e = reg.record(subject, jurisdiction, given=given, evidence=evidence, actor=actor,
                           now=time.time())  # fmt: skip
        reg.close()
    finally:
        rec.close()
    typer.echo(
        f"consent {'given' if e.given else 'withdrawn'} for {e.subject[:12]}… ({e.jurisdiction})"
    )


@consent_app.command("show")
def consent_show(
    subject: str = typer.Option(..., "--subject"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """A subject's consent history (pseudonym, jurisdiction, given, time, evidence, actor)."""
    import dataclasses

    rec = _open(data_dir, config)
    try:
        reg = _consent(rec)
        with _store_errors():
            hist = reg.history(subject)
        reg.close()
    finally:
        rec.close()
    _emit([dataclasses.asdict(e) for e in hist], as_json,
          [f"{e.ts:.0f} {e.jurisdiction} {'given' if e.given else 'withdrawn'} {e.evidence}"
           for e in hist] or ["no consent recorded (= no consent)"])  # fmt: skip


LI_ACTOR = typer.Option(..., "--actor", help="the LI officer (dual control: two different)")
LI_ROLE_OPT = typer.Option(..., "--role", help="must be li-officer")


def _warrants(rec: Any) -> tuple[Any, Any]:
    import os

    from callward.privacy.intercept import WarrantRegistry
    from callward.records.audit import AuditLog

    li = rec.data_dir / "li"
    li.mkdir(parents=True, exist_ok=True)
    os.chmod(li, 0o700)  # the LI area: only the service account, never other operators
    audit = AuditLog(li / "audit.db")
    return WarrantRegistry(li / "warrants.db", rec.codec.cipher.pseudonymizer, audit), audit


@li_app.command("provision")
def li_provision(
    liid: str = typer.Option(..., "--liid"),
    target: list[str] = typer.Option(..., "--target", help="MSISDN or URI (repeatable)"),
    scope: str = typer.Option("iri,cc", "--scope", help="iri, cc or iri,cc"),
    valid_from: str = typer.Option(..., "--from", help="epoch or ISO 8601"),
    valid_to: str = typer.Option(..., "--to", help="epoch or ISO 8601"),
    authority: str = typer.Option(..., "--authority", help="issuing authority and reference"),
    actor: str = LI_ACTOR,
    role: str = LI_ROLE_OPT,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """First officer records a warrant; it stays inactive until a second officer activates it."""
    parts = {p.strip().lower() for p in scope.split(",") if p.strip()}
    if not parts or parts - {"iri", "cc"}:
        raise _fail(f"--scope {scope!r}: expected iri, cc or iri,cc")
    start, end = _when(valid_from, "--from"), _when(valid_to, "--to")
    rec = _open(data_dir, config)
    try:
        reg, audit = _warrants(rec)
        with _store_errors():
            w = reg.provision(actor=actor, role=role, liid=liid, targets=target,
                              iri="iri" in parts, cc="cc" in parts, valid_from=start or 0.0,
                              valid_to=end or 0.0, authority=authority)  # fmt: skip
        reg.close()
        audit.close()
    finally:
        rec.close()
    typer.echo(f"warrant {w.liid} provisioned (xid {w.xid}); needs activation by another officer")


@li_app.command("activate")
def li_activate(
    liid: str = typer.Argument(...),
    actor: str = LI_ACTOR,
    role: str = LI_ROLE_OPT,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Second officer activates a provisioned warrant (dual control)."""
    rec = _open(data_dir, config)
    try:
        reg, audit = _warrants(rec)
        with _store_errors():
            reg.activate(liid, actor=actor, role=role)
        reg.close()
        audit.close()
    finally:
        rec.close()
    typer.echo(f"warrant {liid} active")


@li_app.command("list")
def li_list(
    actor: str = LI_ACTOR,
    role: str = LI_ROLE_OPT,
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Warrants (li-officer role only)."""
    import dataclasses

    rec = _open(data_dir, config)
    try:
        reg, audit = _warrants(rec)
        with _store_errors():
            ws = reg.all(actor=actor, role=role)
        reg.close()
        audit.close()
    finally:
        rec.close()
    now = time.time()
    lines = [
        f"{w.liid} {'ACTIVE' if w.active(now) else 'inactive'} "
        f"{'IRI' if w.iri else ''}{'+CC' if w.cc else ''} {w.authority}"
        for w in ws
    ]
    _emit([dataclasses.asdict(w) for w in ws], as_json, lines)


DEPLOYMENT = typer.Option(..., "--deployment", help="deployment YAML (docs/examples/)")


@privacy_app.command("dataflow")
def privacy_dataflow(
    deployment: Path = DEPLOYMENT,
    out: Path = typer.Option(Path("dataflow"), "--out", help="directory for JSON/SVG/PNG"),
    as_json: bool = JSON,
) -> None:
    """Data-flow map of a deployment (components, regions, processors, data classes) as JSON,
    SVG and PNG; exit 1 when a cross-border transfer has no safeguard."""
    from callward.privacy.dataflow import dataflow_graph, load_deployment, write_outputs

    with _store_errors():
        graph = dataflow_graph(load_deployment(deployment))
    paths = write_outputs(graph, out)
    lines = [f"{len(graph['nodes'])} components in {len(graph['regions'])} regions, "
             f"{len(graph['transfers'])} cross-border flow(s); wrote "
             + ", ".join(str(p) for p in paths)]  # fmt: skip
    lines += [f"  transfer {t['source']} -> {t['target']} {t['from_country']}->{t['to_country']}"
              f" [{', '.join(t['data'])}]: {t['safeguard'] or 'NO SAFEGUARD'}"
              for t in graph["transfers"]]  # fmt: skip
    _emit(graph, as_json, lines)
    if graph["unsafeguarded"]:
        raise typer.Exit(1)


dpia_app = typer.Typer(help="DPIA and DPA registers checked against the deployment.")
privacy_app.add_typer(dpia_app, name="dpia")


@dpia_app.command("check")
def dpia_check(
    deployment: Path = DEPLOYMENT,
    today: str | None = typer.Option(None, "--today", help="YYYY-MM-DD (default: today)"),
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Exit 1 when the deployment violates a DPIA mitigation (excluded region, recording
    without a consent rule, retention longer than stated), a DPA, or a transfer safeguard."""
    import dataclasses
    import datetime as dt

    from callward.privacy.dataflow import load_deployment
    from callward.privacy.dpia import check_deployment
    from callward.privacy.retention_policy import load_policy

    cfg = _config(config)
    try:
        day = dt.date.fromisoformat(today) if today else None
    except ValueError:
        raise _fail(f"--today {today!r}: expected YYYY-MM-DD") from None
    with _store_errors():
        dep = load_deployment(deployment)
        policy = load_policy(cfg.retention.rule_sets, cfg.records.jurisdictions,
                             cfg.records.default_jurisdictions)  # fmt: skip
        found = check_deployment(dep, cfg, policy, day)
    bad = [f for f in found if f.severity == "violation"]
    lines = [f"{f.severity.upper():9} {f.register:8} {f.subject}: {f.message}" for f in found]
    lines.append(f"{len(bad)} violation(s), {len(found) - len(bad)} warning(s)")
    _emit([dataclasses.asdict(f) for f in found], as_json, lines)
    if bad:
        raise typer.Exit(1)


@privacy_app.command("minimisation")
def privacy_minimisation(
    flagged_only: bool = typer.Option(False, "--flagged", help="only fields with a finding"),
    as_json: bool = JSON,
) -> None:
    """Fields collected per schema (CDR registry, events, logs, stored SIP) against their
    declared purpose; personal fields nothing reads are flagged (exit 1 when any)."""
    import dataclasses

    from callward.privacy.minimisation import minimisation_report

    rows = minimisation_report()
    shown = [r for r in rows if r.flag] if flagged_only else rows
    lines = [f"{r.schema:<24} {r.field:<16} {'PERSONAL' if r.personal else '':8} "
             f"readers={r.readers:<3} {r.flag or r.purpose[:60]}" for r in shown]  # fmt: skip
    unused = [r for r in rows if r.flag == "unused personal field"]
    lines.append(f"{len(rows)} fields, {sum(r.personal for r in rows)} personal, "
                 f"{len(unused)} unused personal field(s)")  # fmt: skip
    _emit([dataclasses.asdict(r) for r in shown], as_json, lines)
    if unused:
        raise typer.Exit(1)


@privacy_app.command("aggregate-export")
def privacy_aggregate_export(
    k: int = typer.Option(5, "--k", help="minimum calls per released group"),
    since: str | None = typer.Option(None, "--since"),
    until: str | None = typer.Option(None, "--until"),
    actor: str = ACTOR,
    reason: str = REASON,
    ticket: str = TICKET,
    as_json: bool = JSON,
    data_dir: Path | None = DATA_DIR,
    config: Path | None = CONFIG,
) -> None:
    """Quality and usage per period, region and number prefix, released only for groups of at
    least k calls (time, place and prefix generalised together). Audited as an export."""
    import dataclasses

    from callward.privacy.anonymize import k_anonymous
    from callward.records.audit import AuditedReader
    from callward.records.rows import CdrQuery

    cfg = _config(config)
    q = CdrQuery(start_from=_when(since, "--since"), start_to=_when(until, "--until"))
    rec = _open(data_dir, config)
    try:
        with _store_errors():
            cdrs = AuditedReader(rec.tiered, rec.audit, actor).query(
                q, reason, ticket, action="export"
            )
            rows, report = k_anonymous(cdrs, k, cfg.edge.tenant_regions)
    finally:
        rec.close()
    lines = [f"{r.period} {r.region} {r.prefix}: {r.calls} calls, {r.minutes} min, "
             f"answered {r.answered_share:.0%}, MOS {r.mean_mos}" for r in rows]  # fmt: skip
    lines.append(f"k={k} level {report['level']}: {report['released_groups']} group(s) released,"
                 f" {report['suppressed_calls']} call(s) suppressed")  # fmt: skip
    _emit({"report": report, "rows": [dataclasses.asdict(r) for r in rows]}, as_json, lines)


def register(app: typer.Typer) -> None:
    """Attach ``privacy`` to the root app."""
    app.add_typer(privacy_app, name="privacy")
