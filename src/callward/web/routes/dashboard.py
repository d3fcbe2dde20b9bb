"""The dashboard: one server-rendered page (recent calls, per-call quality charts, the
data-usage planner, the audit chain status). Plain HTML and a little vanilla JS, no build.

The page is a CDR read like any other: it goes through the same audited, pseudonymized listing
as ``GET /api/v1/calls``. The audit status is fetched by the page's script after load, so a long
trail never slows the first paint.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials

from callward import __version__
from callward.usage.planner import CODECS, SRTP_TAG_BYTES
from callward.web.charts import Series, bar_chart
from callward.web.routes.api import (
    Tenant,
    _bearer,
    _known_query_only,
    current_principal,
    list_calls,
    state_of,
)

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(_known_query_only)])


def _charts(rows: list[dict[str, Any]], warn: float, critical: float) -> list[str]:
    """MOS, jitter and loss per call, bars in table order (#1 = newest)."""
    return [
        bar_chart(
            Series(
                "MOS",
                "",
                [r["mos"] for r in rows],
                1.0,
                4.5,
                ((warn, "warn"), (critical, "critical")),
            )
        ),
        bar_chart(Series("Jitter", "ms", [r["jitter_ms"] for r in rows])),
        bar_chart(Series("Loss", "%", [r["loss_pct"] for r in rows])),
    ]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cursor: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
    tenant: Tenant = None,
) -> HTMLResponse:
    state = state_of(request)
    try:
        who = current_principal(request, cred)
    except HTTPException:  # tokens are configured and none (or a stale one) was presented
        page = state.templates.get_template("login.html").render(version=__version__)
        return HTMLResponse(page, status_code=401)
    rows, next_cursor = await state.run(
        lambda: list_calls(
            state, who, limit=state.settings.page_size, cursor=cursor, tenant=tenant,
            endpoint="dashboard",
        )
    )  # fmt: skip
    q = state.config.quality
    html = state.templates.get_template("dashboard.html").render(
        version=__version__,
        actor=who.actor,
        signed_in=bool(state.settings.tokens),
        role=who.role.value,
        rows=rows,
        charts=_charts(rows, q.mos_warn, q.mos_critical),
        next_cursor=next_cursor,
        tenant=tenant or "",
        first_page=cursor is None,
        codecs=list(CODECS),
        suites=list(SRTP_TAG_BYTES),
        mos_warn=q.mos_warn,
        mos_critical=q.mos_critical,
    )
    return HTMLResponse(html)
