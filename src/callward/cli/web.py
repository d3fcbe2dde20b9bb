"""`callward web`: serve the dashboard and REST API (uvicorn) over the records in --data-dir.

Listens on 127.0.0.1 by default: with no ``--settings`` file (bearer tokens) the app serves an
anonymous viewer that sees pseudonyms only, which is meant for the local machine.
"""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from callward.cli.exits import fail as _fail
from callward.errors import CallwardError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("web")
    def web(
        host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
        port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port"),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", help="data directory (default: storage.data_dir)"
        ),
        config: Path | None = typer.Option(None, "--config", help="callward.yaml"),
        settings: Path | None = typer.Option(
            None, "--settings", help="web settings YAML (bearer tokens, page size)"
        ),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level"),
    ) -> None:
        """Serve the dashboard (/) and the REST API (/api/v1, OpenAPI at /api/docs)."""
        import uvicorn

        from callward.config import load_config
        from callward.records.service import open_records
        from callward.web import create_app, load_web_settings

        if log_level not in ("critical", "error", "warning", "info", "debug"):
            raise _fail(f"--log-level {log_level!r}: expected critical|error|warning|info|debug")
        try:
            cfg = load_config(config)
            web_settings = load_web_settings(settings)
            records = open_records(data_dir or cfg.storage.data_dir, cfg.records)
        except CallwardError as exc:
            raise _fail(str(exc)) from None
        try:
            sock = _listen(host, port)
        except OSError as exc:
            records.close()
            raise _fail(f"--host {host} --port {port}: cannot listen: {exc.strerror}") from None
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        typer.echo(
            f"callward web: dashboard http://{shown}:{bound}/  API http://{shown}:{bound}/api/docs",
            err=True,
        )
        # access_log off: request lines carry paths with call ids and client addresses.
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(cfg, records, web_settings),
                log_level=log_level,
                access_log=False,
                server_header=False,
            )
        )
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            records.close()


def _listen(host: str, port: int) -> socket.socket:
    """Bind before handing the socket to uvicorn, so a busy port is our one-line exit 2."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock
