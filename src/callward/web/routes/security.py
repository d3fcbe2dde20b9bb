"""The dashboard's security view: SecurityAlerts (admission, scanners, brute force, fraud,
cross-tenant attempts, TLS expiry) as ``callward serve`` recorded them
(:class:`~callward.records.security_alerts.SecurityAlertStore`): counts per rule over the last
24 hours and the newest alerts. Sources are keyed pseudonyms and details sanitised text, and
the page is rendered with autoescaping, so nothing an attacker put in a header reaches the
browser as markup. A principal bound to tenants sees only those tenants' alerts.

``GET /security`` (HTML) and ``GET /api/v1/security/alerts`` (JSON).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel

from callward import __version__
from callward.records.security_alerts import SecurityAlertStore
from callward.web.routes.api import (
    _ERR,
    Who,
    _bearer,
    _known_query_only,
    current_principal,
    state_of,
)
from callward.web.settings import Principal

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(_known_query_only)])
DAY = 86400.0


class SecurityAlertOut(BaseModel):
    ts: float
    node: str
    tenant: str
    rule: str
    source: str  # keyed pseudonym ("src:<hex>"), never an address
    detail: str


class SecurityAlerts(BaseModel):
    counts_24h: dict[str, int]
    alerts: list[SecurityAlertOut]


def _store(request: Request) -> SecurityAlertStore:
    store: SecurityAlertStore | None = getattr(request.app.state, "security_alerts", None)
    if store is None:
        path = state_of(request).records.data_dir / "security_alerts.sqlite"
        store = SecurityAlertStore(path)
        request.app.state.security_alerts = store
    return store


async def _view(request: Request, who: Principal, limit: int) -> dict[str, Any]:
    state = state_of(request)
    store = _store(request)
    since = state.clock() - DAY

    def read() -> dict[str, Any]:
        return {
            "counts_24h": store.counts(since, who.tenants),
            "alerts": [asdict(a) for a in store.recent(limit, who.tenants)],
        }

    return await state.run(read)


@router.get(
    "/api/v1/security/alerts",
    response_model=SecurityAlerts,
    responses={401: _ERR, 422: _ERR},
    tags=["security"],
)
async def security_alerts(
    request: Request, who: Who, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> dict[str, Any]:
    """Counts per rule over 24 h and the newest alerts (pseudonymized sources)."""
    return await _view(request, who, limit)


@router.get("/security", response_class=HTMLResponse, include_in_schema=False)
async def security_page(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> HTMLResponse:
    state = state_of(request)
    try:
        who = current_principal(request, cred)
    except HTTPException:
        page = state.templates.get_template("login.html").render(version=__version__)
        return HTMLResponse(page, status_code=401)
    view = await _view(request, who, 100)
    html = state.templates.get_template("security.html").render(
        version=__version__, actor=who.actor, role=who.role.value, **view
    )
    return HTMLResponse(html)
