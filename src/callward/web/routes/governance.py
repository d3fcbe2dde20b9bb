"""DPO and LI-officer views: ``/governance`` (holds, consent counts, data flow, DPIA/DPA
findings, audit-chain status) for the ``dpo`` role, ``/li`` (warrants and the LI trail) for the
``li-officer`` role only. JSON under ``/api/v1/governance/*`` and ``/api/v1/li/*``; the HTML
pages render the same data. Every other role gets 403, and the LI answers reveal nothing about
interceptions to anyone else (the LI trail is a separate file, never the CDR trail).
"""

from __future__ import annotations

import dataclasses
import html
import sqlite3
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from callward.web.routes.api import _ERR, _known_query_only, current_principal, state_of
from callward.web.settings import Principal, Role

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(_known_query_only)])


def _role(principal: Principal, role: Role) -> None:
    if principal.role is not role:
        raise HTTPException(403, f"this view needs the {role.value} role")


def dpo(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    _role(principal, Role.DPO)
    return principal


def li_officer(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    _role(principal, Role.LI_OFFICER)
    return principal


def _governance(state: Any) -> dict[str, Any]:
    rec = state.records
    now = state.clock()
    holds = [dataclasses.asdict(h) for h in rec.holds.active(now)]
    problems = state.audit.verify()
    consent: dict[str, dict[str, int]] = {}
    db = rec.data_dir / "consent.db"
    if db.exists():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT jurisdiction, given, COUNT(*) FROM (SELECT subject, jurisdiction, given,"
                " MAX(ts) FROM consent GROUP BY subject, jurisdiction) GROUP BY jurisdiction, given"
            ).fetchall()
        finally:
            con.close()
        for j, given, n in rows:
            consent.setdefault(j, {"given": 0, "withdrawn": 0})[
                "given" if given else "withdrawn"
            ] = n
    out: dict[str, Any] = {
        "holds": holds,
        "audit": {"entries": len(state.audit.entries()), "intact": not problems,
                  "problems": problems[:20]},
        "consent": consent,
        "dataflow": None,
        "findings": [],
    }  # fmt: skip
    dep_path = state.config.privacy.deployment
    if dep_path is not None:
        from callward.privacy.dataflow import dataflow_graph, load_deployment
        from callward.privacy.dpia import check_deployment

        dep = load_deployment(dep_path)
        out["dataflow"] = dataflow_graph(dep)
        policy = rec.policy(state.config.retention.rule_sets)
        out["findings"] = [
            dataclasses.asdict(f) for f in check_deployment(dep, state.config, policy)
        ]
    return out


def _li(state: Any, actor: str) -> dict[str, Any]:
    from callward.privacy.intercept import LI_ROLE, WarrantRegistry
    from callward.records.audit import AuditLog

    li = state.records.data_dir / "li"
    if not (li / "warrants.db").exists():
        return {"warrants": [], "trail": {"entries": 0, "intact": True}}
    audit = AuditLog(li / "audit.db")
    reg = WarrantRegistry(li / "warrants.db", state.records.codec.cipher.pseudonymizer, audit)
    try:
        now = time.time()
        ws = [{**dataclasses.asdict(w), "active": w.active(now)}
              for w in reg.all(actor=actor, role=LI_ROLE)]  # fmt: skip
        problems = audit.verify()
        return {"warrants": ws,
                "trail": {"entries": len(audit.entries()), "intact": not problems}}  # fmt: skip
    finally:
        reg.close()
        audit.close()


_RESP: dict[int | str, dict[str, Any]] = {401: _ERR, 403: _ERR, 422: _ERR}


@router.get("/api/v1/governance", tags=["governance"], responses=_RESP)
async def governance_api(request: Request, who: Annotated[Principal, Depends(dpo)]) -> Any:
    """Holds, consent counts per jurisdiction, data flow, DPIA/DPA findings, audit status."""
    state = state_of(request)
    return await state.run(_governance, state)


@router.get("/api/v1/li/warrants", tags=["lawful interception"], responses=_RESP)
async def li_api(request: Request, who: Annotated[Principal, Depends(li_officer)]) -> Any:
    """Warrants and the LI trail status (li-officer role only)."""
    state = state_of(request)
    return await state.run(_li, state, who.actor)


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<link rel='stylesheet' href='/static/dashboard.css'></head><body><h1>{title}</h1>"
        f"{body}</body></html>"
    )


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>" if rows else "<p>none</p>"


@router.get("/governance", response_class=HTMLResponse, include_in_schema=False)
async def governance_page(request: Request, who: Annotated[Principal, Depends(dpo)]) -> Any:
    state = state_of(request)
    d = await state.run(_governance, state)
    a = d["audit"]
    consent = [{"jurisdiction": j, **v} for j, v in sorted(d["consent"].items())]
    flows = (d["dataflow"] or {}).get("transfers", [])
    body = (
        f"<h2>Audit chain</h2><p>{a['entries']} entries, "
        f"{'intact' if a['intact'] else 'TAMPERED'}</p>"
        f"<h2>Legal holds</h2>{_table(d['holds'], ['hold_id', 'ticket', 'reason', 'expires'])}"
        f"<h2>Consent</h2>{_table(consent, ['jurisdiction', 'given', 'withdrawn'])}"
        f"<h2>Data flow</h2>{_table(flows, ['source', 'target', 'to_country', 'safeguard'])}"
        f"<h2>DPIA / DPA findings</h2>"
        f"{_table(d['findings'], ['severity', 'register', 'subject', 'message'])}"
    )
    return _page("Data protection", body)


@router.get("/li", response_class=HTMLResponse, include_in_schema=False)
async def li_page(request: Request, who: Annotated[Principal, Depends(li_officer)]) -> Any:
    state = state_of(request)
    d = await state.run(_li, state, who.actor)
    t = d["trail"]
    body = (
        f"<h2>Warrants</h2>"
        f"{_table(d['warrants'], ['liid', 'active', 'iri', 'cc', 'authority', 'valid_to'])}"
        f"<h2>LI trail</h2><p>{t['entries']} entries, {'intact' if t['intact'] else 'TAMPERED'}</p>"
    )
    return _page("Lawful interception", body)
