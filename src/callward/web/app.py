"""The FastAPI application: REST API under ``/api/v1``, the dashboard at ``/``, ``/metrics``.

``create_app(config, records)`` wires the committed stores in; nothing here owns data. Errors
follow the project's one-line rule, as JSON: ``{"error": "<what was wrong and what was
expected>"}``. Bad input is a 4xx (validation 422, missing audit headers 400, unknown token 401,
forbidden reveal 403, unknown call 404); a store that cannot answer is 503; a 500 means a bug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from callward import __version__
from callward.config import CallwardConfig
from callward.errors import CallwardError, CaptureError, ConfigError, StoreError
from callward.records.audit import AuditLog
from callward.records.service import Records
from callward.web.metrics import WebMetrics
from callward.web.sessions import open_session_store
from callward.web.settings import WebSettings

__all__ = ["AUDIT_HEADERS", "WebState", "create_app"]

HERE = Path(__file__).parent
AUDIT_HEADERS = ("x-callward-reason", "x-callward-ticket")
_SECURITY_HEADERS = {
    # Everything the page needs is same-origin; the charts are inline SVG, not images.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # pages and API answers hold CDR data
}
log = logging.getLogger("callward.web")
T = TypeVar("T")


@dataclass
class WebState:
    """What the routes share. All store and audit work runs on one worker thread (``run``):
    SQLite connections of the audit trail are bound to the thread that opened them, and one
    writer thread also keeps the audit anchor file's updates in order. The web opens its own
    :class:`AuditLog` on the records' audit file there (same chain, same anchor)."""

    config: CallwardConfig
    records: Records
    settings: WebSettings
    metrics: WebMetrics
    clock: Callable[[], float]
    templates: jinja2.Environment
    _executor: ThreadPoolExecutor | None = None
    _audit: AuditLog | None = None

    def pseudonym(self, identifier: str) -> str:
        return self.records.codec.pseudonym(identifier).hex()

    @property
    def audit(self) -> AuditLog:
        """The web's audit log; only touch it from inside :meth:`run`."""
        if self._audit is None:
            src = self.records.audit
            self._audit = AuditLog(src.path, src.anchor, clock=self.clock)
        return self._audit

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:  # (re)started with the app's lifespan
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="callward-web-records")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        """Close the web's audit log on its own thread and stop the worker (app shutdown)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def _close() -> None:
            if self._audit is not None:
                self._audit.close()
                self._audit = None

        executor.submit(_close).result()
        executor.shutdown(wait=True)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message.splitlines()[0] if message else "error"}, status)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        empty = err["type"] in ("missing", "string_too_short")  # an empty header is no reason
        if loc[:1] == ["header"] and loc[-1].lower() in AUDIT_HEADERS and empty:
            return 400, (
                "missing headers X-Callward-Reason and X-Callward-Ticket: every CDR read needs"
                " a stated reason and a ticket (recorded in the audit trail)"
            )
    err = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if err.get("type") == "json_invalid":
        return 422, "body: not valid JSON"
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
    msg = str(err.get("msg", "invalid")).replace("\n", " ")
    return 422, f"{where}: {msg}"


def create_app(
    config: CallwardConfig,
    records: Records,
    settings: WebSettings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    metrics: WebMetrics | None = None,
) -> FastAPI:
    """The web app over an opened :class:`~callward.records.service.Records`."""
    from callward.web.routes import api, captures, dashboard, governance, phone, security

    state = WebState(
        config=config,
        records=records,
        settings=settings or WebSettings(),
        metrics=metrics or WebMetrics(),
        clock=clock,
        templates=jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()
        app.state.sessions.close()
        alerts = getattr(app.state, "security_alerts", None)  # web/routes/security.py
        if alerts is not None:
            alerts.close()
        if app.state.phone is not None:
            app.state.phone.close()
            await app.state.phone.fetcher.aclose()

    app = FastAPI(
        lifespan=lifespan,
        title="callward",
        version=__version__,
        description="CDRs (pseudonymized, audited), call quality and the data-usage planner.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    app.state.web = state
    # shared by every worker (SQLite in data_dir by default, or Redis): web/sessions.py
    app.state.sessions = open_session_store(state.settings.sessions, records.data_dir, clock)
    app.state.phone = (
        phone.open_phone_services(config, records.data_dir, state)
        if config.identity.issuer
        else None
    )
    app.include_router(api.router)
    app.include_router(captures.router)
    if app.state.phone is not None:  # the phone API exists only with an OAuth issuer
        app.include_router(phone.router)
    app.include_router(governance.router)
    app.include_router(dashboard.router)
    app.include_router(security.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        resp = _error(exc.status_code, str(exc.detail))
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        if exc.status_code == 405:
            # RFC 9110 §15.5.6: Allow lists every method of the resource; Starlette names only
            # the first route whose path matched (POST and DELETE /session are two routes).
            allowed: set[str] = set()
            for route in (*api.router.routes, *captures.router.routes, *dashboard.router.routes,
                          *phone.router.routes):  # fmt: skip
                match, _ = route.matches(request.scope)
                if match is not Match.NONE:
                    allowed |= set(getattr(route, "methods", None) or ())
            if allowed:
                resp.headers["Allow"] = ", ".join(sorted(allowed))
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return _error(*_validation_message(exc))

    @app.exception_handler(CallwardError)
    async def _ours(_: Request, exc: CallwardError) -> Response:
        if isinstance(exc, StoreError):
            log.warning("store unavailable: %s", type(exc).__name__)
            return _error(503, "CDR store unavailable; try again later")
        # ConfigError/CaptureError: a value or file we could not use (422); the rest: 400.
        return _error(422 if isinstance(exc, ConfigError | CaptureError) else 400, str(exc))

    @app.middleware("http")
    async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        state.metrics.request(
            str(template or "unmatched"),
            request.method,
            response.status_code,
            time.perf_counter() - start,
        )
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    return app
