"""REST API, version 1. Every endpoint that reads CDRs writes an audit entry (who, why, which
ticket, which records) *before* it returns data, like
:class:`callward.records.audit.AuditedReader`: a crash can over-report an access, never hide one.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callward import __version__
from callward.errors import PolicyError
from callward.metrics_access import MetricsAccess
from callward.records.rows import CdrQuery
from callward.usage import MediaChoice, plan_call, plan_keepalive
from callward.web.app import WebState
from callward.web.calls import assess, call_detail, call_row, mos_distribution, recent_calls
from callward.web.schemas import (
    AuditStatus,
    CallDetail,
    CallsPage,
    ErrorBody,
    Health,
    PlanRequest,
    PlanResponse,
    QualitySummary,
    SessionRequest,
)
from callward.web.sessions import SessionStore
from callward.web.settings import Principal

__all__ = ["audit_status", "current_principal", "router", "sessions_of", "state_of"]


def _known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not define: a typo such as ``?reveall=true``
    must fail loudly (422), not be ignored."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    todo = [dependant]
    while todo:
        d = todo.pop()
        known.update(p.alias for p in d.query_params)
        todo.extend(d.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise HTTPException(422, f"unknown query parameter {unknown[0][:40]!r}")


router = APIRouter(dependencies=[Depends(_known_query_only)])
_bearer = HTTPBearer(auto_error=False, description="token from the web settings file")
_ERR = {"model": ErrorBody}
SESSION_COOKIE = "callward_session"
LIST_REASON = "dashboard/API: recent calls list (pseudonymized)"
NO_TICKET = "none (pseudonymized view)"
_MAX_ALERTS = 50


def state_of(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def current_principal(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """From ``Authorization: Bearer`` (API clients) or the dashboard's server-side session
    (:mod:`callward.web.sessions`: the cookie is a session id, never the token)."""
    settings = state_of(request).settings
    token = cred.credentials if cred else None
    principal: Principal | None
    if token is None and settings.tokens:  # a cookie left from a token-mode run is ignored
        principal = sessions_of(request).get(request.cookies.get(SESSION_COOKIE))
    else:
        principal = settings.authenticate(token)
    if principal is None:
        raise HTTPException(
            401, "unknown or missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


def sessions_of(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


Who = Annotated[Principal, Depends(current_principal)]
Reason = Annotated[str, Header(alias="X-Callward-Reason", min_length=1, max_length=500)]
Ticket = Annotated[str, Header(alias="X-Callward-Ticket", min_length=1, max_length=200)]
OptReason = Annotated[str | None, Header(alias="X-Callward-Reason", min_length=1, max_length=500)]
OptTicket = Annotated[str | None, Header(alias="X-Callward-Ticket", min_length=1, max_length=200)]
Tenant = Annotated[str | None, Query(min_length=1, max_length=100)]


def _scope(who: Principal, tenant: str | None) -> str | None:
    try:
        return who.scope(tenant)
    except PolicyError as exc:
        raise HTTPException(403 if tenant is not None else 400, str(exc)) from None


def _check_reveal(who: Principal, reveal: bool, reason: str | None, ticket: str | None) -> None:
    if not reveal:
        return
    if not who.may_reveal:
        raise HTTPException(403, f"role {who.role.value!r} may not reveal identifiers")
    if not (reason and reason.strip() and ticket and ticket.strip()):
        raise HTTPException(
            400, "reveal=true needs X-Callward-Reason and X-Callward-Ticket headers"
        )


def _audit(
    state: WebState, who: Principal, reason: str, ticket: str, ids: list[str], **detail: Any
) -> None:
    state.audit.record(
        who.actor, "read", reason, ticket, ids,
        detail=json.dumps({"via": "web", **detail}, separators=(",", ":"), sort_keys=True),
    )  # fmt: skip


def list_calls(
    state: WebState,
    who: Principal,
    *,
    limit: int,
    cursor: str | None,
    tenant: str | None,
    reveal: bool = False,
    reason: str | None = None,
    ticket: str | None = None,
    endpoint: str = "calls",
) -> tuple[list[dict[str, Any]], str | None]:
    """One audited page of recent calls (used by the API and the dashboard)."""
    page = recent_calls(
        state.records.store,
        limit=limit,
        now=state.clock(),
        cursor=cursor,
        tenant=_scope(who, tenant),
    )
    ids = [c.call_id for c in page.calls]
    _audit(
        state, who, (reason or "").strip() or LIST_REASON, (ticket or "").strip() or NO_TICKET,
        ids, endpoint=endpoint, count=len(ids), revealed=reveal,
    )  # fmt: skip
    state.metrics.cdr_reads.labels(endpoint).inc()
    state.metrics.cdr_records.inc(len(ids))
    if reveal:
        state.metrics.reveals.inc()
    return [call_row(c, state.pseudonym, reveal) for c in page.calls], page.next_cursor


@router.get(
    "/api/v1/calls",
    response_model=CallsPage,
    responses={400: _ERR, 401: _ERR, 403: _ERR, 422: _ERR, 503: _ERR},
    tags=["calls"],
    summary="Recent calls, newest first, subjects pseudonymized (audited read)",
)
async def get_calls(
    request: Request,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
    tenant: Tenant = None,
    reveal: bool = False,
    reason: OptReason = None,
    ticket: OptTicket = None,
) -> dict[str, Any]:
    _check_reveal(who, reveal, reason, ticket)
    state = state_of(request)
    rows, nxt = await state.run(
        lambda: list_calls(
            state, who, limit=limit, cursor=cursor, tenant=tenant, reveal=reveal,
            reason=reason, ticket=ticket,
        )
    )  # fmt: skip
    return {"calls": rows, "next_cursor": nxt, "revealed": reveal}


@router.get(
    "/api/v1/calls/{call_id}",
    response_model=CallDetail,
    responses={400: _ERR, 401: _ERR, 403: _ERR, 404: _ERR, 422: _ERR, 503: _ERR},
    tags=["calls"],
    summary="One CDR with legs, media stats, MOS and lineage (audited read)",
)
async def get_call(
    request: Request,
    call_id: Annotated[str, Path(min_length=1, max_length=512)],
    who: Who,
    reason: Reason,
    ticket: Ticket,
    reveal: bool = False,
) -> dict[str, Any]:
    _check_reveal(who, reveal, reason, ticket)
    if not reason.strip() or not ticket.strip():
        raise HTTPException(400, "X-Callward-Reason and X-Callward-Ticket must not be blank")
    state = state_of(request)
    return await state.run(_read_call, state, who, call_id, reason, ticket, reveal)


def _read_call(
    state: WebState, who: Principal, call_id: str, reason: str, ticket: str, reveal: bool
) -> dict[str, Any]:
    store = state.records.tiered
    found = store.query(CdrQuery(call_ids=(call_id,), limit=1))
    # another tenant's record is "not found" to this principal; the attempt is still audited
    denied = bool(found) and not who.may_read(found[0].tenant)
    if denied:
        found = []
    _audit(
        state, who, reason.strip(), ticket.strip(), [c.call_id for c in found],
        endpoint="call", store=store.name, count=len(found), revealed=reveal, denied=denied,
    )  # fmt: skip
    state.metrics.cdr_reads.labels("call").inc()
    if not found:
        raise HTTPException(404, "no CDR with that call id (in hot or cold storage)")
    state.metrics.cdr_records.inc()
    if reveal:
        state.metrics.reveals.inc()
    return call_detail(found[0], state.pseudonym, state.config.quality, reveal)


@router.get(
    "/api/v1/quality/summary",
    response_model=QualitySummary,
    responses={401: _ERR, 422: _ERR, 503: _ERR},
    tags=["quality"],
    summary="MOS distribution and calls under their tenant's MOS thresholds (audited read)",
)
async def get_quality_summary(
    request: Request,
    who: Who,
    window: Annotated[int | None, Query(ge=1, le=5000)] = None,
    tenant: Tenant = None,
) -> dict[str, Any]:
    state = state_of(request)
    return await state.run(_quality_summary, state, who, window or state.settings.summary_window,
                           tenant)  # fmt: skip


def _quality_summary(state: WebState, who: Principal, n: int, tenant: str | None) -> dict[str, Any]:
    page = recent_calls(state.records.store, limit=n, now=state.clock(), tenant=_scope(who, tenant))
    cfg = state.config.quality
    alerts: list[dict[str, Any]] = []
    by_level = {"warn": 0, "critical": 0}
    for c in page.calls:
        a = assess(c, cfg)
        if a["level"] and c.mos_min is not None:
            by_level[a["level"]] += 1
            alerts.append({"call_id": c.call_id, "tenant": c.tenant, "mos": c.mos_min,
                           "level": a["level"], "cause": a["cause"],
                           "start_utc": call_row(c, state.pseudonym)["start_utc"]})  # fmt: skip
    alerts.sort(key=lambda a: (a["mos"], a["call_id"]))
    _audit(
        state, who, "quality summary (aggregate; alerting call ids)", NO_TICKET,
        [a["call_id"] for a in alerts[:_MAX_ALERTS]], endpoint="quality", count=len(page.calls),
    )  # fmt: skip
    state.metrics.cdr_reads.labels("quality").inc()
    values = [c.mos_min for c in page.calls if c.mos_min is not None]
    return {
        "calls": len(page.calls),
        "without_mos": len(page.calls) - len(values),
        "distribution": mos_distribution(values),
        "alerts": alerts[:_MAX_ALERTS],
        "alerts_total": len(alerts),
        "by_level": by_level,
    }


@router.post(
    "/api/v1/plan",
    response_model=PlanResponse,
    responses={400: _ERR, 422: _ERR},
    tags=["usage"],
    summary="Bytes on the air for a media/transport choice (data-usage planner)",
)
def post_plan(body: PlanRequest) -> dict[str, Any]:
    # MediaChoice re-validates; its ConfigError becomes a 422 in the app's handler.
    choice = MediaChoice(
        codec=body.codec, ptime_ms=body.ptime_ms, bitrate=body.bitrate, srtp=body.srtp,
        ip_version=body.ip_version, rohc=body.rohc, voice_activity=body.voice_activity,
        rtcp=body.rtcp,
    )  # fmt: skip
    plan = plan_call(choice)
    one = plan.bytes_per_second * 60.0 * body.minutes
    ka = body.keepalive
    return {
        "plan": plan.as_dict(),
        "minutes": body.minutes,
        "bytes_one_direction": round(one),
        "bytes_both_directions": round(2 * one),
        "keepalive": plan_keepalive(ka.method, ka.interval_s).as_dict() if ka else None,
    }


@router.post(
    "/api/v1/session",
    status_code=204,
    response_class=Response,
    responses={400: _ERR, 401: _ERR, 422: _ERR},
    tags=["session"],
    summary="Dashboard sign-in: check a token, start a server-side session (new id each time)",
)
def post_session(request: Request, body: SessionRequest) -> Response:
    principal = state_of(request).settings.authenticate(body.token)
    if principal is None or not state_of(request).settings.tokens:
        raise HTTPException(401, "unknown token")
    # A new id at every sign-in, re-authentication or privilege change; the session the
    # browser came with (if any) is revoked server-side, so a fixated or stolen id dies here.
    sid = sessions_of(request).create(principal, replaces=request.cookies.get(SESSION_COOKIE))
    resp = Response(status_code=204)
    # SameSite=Strict: no other site can make the browser send it (no CSRF on audited reads);
    # HttpOnly: page scripts never see the session id.
    resp.set_cookie(
        SESSION_COOKIE, sid, httponly=True, samesite="strict", path="/",
        secure=request.url.scheme == "https", max_age=8 * 3600,
    )  # fmt: skip
    return resp


@router.delete(
    "/api/v1/session",
    status_code=204,
    response_class=Response,
    responses={422: _ERR},
    tags=["session"],
    summary="Dashboard sign-out: the session is revoked server-side",
)
def delete_session(request: Request) -> Response:
    sessions_of(request).revoke(request.cookies.get(SESSION_COOKIE))
    resp = Response(status_code=204)
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return resp


def audit_status(state: WebState) -> dict[str, Any]:
    problems = state.audit.verify()
    entries = state.audit.entries()
    state.metrics.audit_intact.set(0 if problems else 1)
    head = {"seq": entries[-1].seq, "hash": entries[-1].hash} if entries else None
    return {"intact": not problems, "entries": len(entries), "problems": problems, "head": head}


@router.get(
    "/api/v1/audit/verify",
    response_model=AuditStatus,
    responses={401: _ERR, 422: _ERR},
    tags=["audit"],
    summary="Check the hash chain of the CDR access audit trail",
)
async def get_audit_verify(request: Request, who: Who) -> dict[str, Any]:
    state = state_of(request)
    return await state.run(audit_status, state)


@router.get("/api/v1/health", response_model=Health, responses={422: _ERR, 503: _ERR}, tags=["ops"])
async def get_health(request: Request) -> dict[str, Any]:
    state = state_of(request)
    calls = await state.run(state.records.store.count, CdrQuery())
    return {"status": "ok", "version": __version__, "calls_hot": calls}


@router.get(
    "/metrics",
    response_class=Response,
    tags=["ops"],
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: _ERR, 403: _ERR, 422: _ERR},
    summary="Prometheus text format; labels carry no personal data",
)
def get_metrics(request: Request) -> Response:
    state = state_of(request)
    sec = state.config.security
    refused = MetricsAccess(sec.metrics_token, sec.metrics_allow).check(
        request.headers.get("authorization"), request.client.host if request.client else None
    )
    if refused:
        headers = {"WWW-Authenticate": "Bearer"} if refused == 401 else None
        return JSONResponse({"error": "metrics: not allowed"}, refused, headers=headers)
    return Response(generate_latest(state.metrics.registry), 200,
                    media_type=CONTENT_TYPE_LATEST)  # fmt: skip
