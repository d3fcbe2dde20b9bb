"""The edge's Prometheus ``/metrics``, behind :class:`~callward.metrics_access.MetricsAccess`.

``security.metrics_token`` set: every scrape must send ``Authorization: Bearer <token>``
(401 otherwise); unset: only ``security.metrics_allow`` networks are answered (loopback by
default, 403 otherwise). Served by a small threaded WSGI server in a daemon thread (what
``prometheus_client.start_http_server`` does), with request logging off: a log line per scrape
would write the scraper's address in clear.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from callward.metrics_access import MetricsAccess

__all__ = ["guarded_app", "serve_metrics"]

_REASONS = {401: "401 Unauthorized", 403: "403 Forbidden"}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def shutdown(self) -> None:
        super().shutdown()
        self.server_close()  # release the port at once


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: it would hold the scraper's address."""


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def guarded_app(registry: CollectorRegistry, access: MetricsAccess) -> WsgiApp:
    inner = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status = access.check(environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR"))
        if status:
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
            start_response(_REASONS[status], headers)
            return [b"metrics need a token or a management address\n"]
        result: Iterable[bytes] = inner(environ, start_response)
        return result

    return app


def serve_metrics(
    registry: CollectorRegistry, host: str, port: int, access: MetricsAccess
) -> WSGIServer:
    """Start serving; ``shutdown()`` the returned server to stop."""
    server = make_server(
        host, port, guarded_app(registry, access), server_class=_Server, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="edge-metrics", daemon=True).start()
    return server
