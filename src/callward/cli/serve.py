"""``callward serve --config callward.yaml``: one process running the edge, the media relay
(ng daemon), the CDR writer and the web dashboard, wired by :mod:`callward.runtime` on the
embedded defaults (in-process bus, SQLite under ``storage.data_dir``), or on JetStream and
PostgreSQL when the config names them. SIGINT/SIGTERM stop it cleanly (calls end with their
final media stats, CDRs are flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import typer

from callward.cli.exits import fail
from callward.errors import CallwardError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        config: Path | None = typer.Option(None, "--config", "-c", help="callward.yaml"),
        web_port: int = typer.Option(8080, "--web-port", min=0, max=65535, help="0 = any"),
        web_host: str = typer.Option("127.0.0.1", "--web-host"),
        no_web: bool = typer.Option(False, "--no-web", help="do not serve the dashboard"),
        as_json: bool = typer.Option(False, "--json", help="print bound addresses as JSON"),
    ) -> None:
        """Run edge + relay + CDR writer + web in one process."""
        from callward.config import load_config

        try:
            cfg = load_config(config)
        except CallwardError as exc:
            raise fail(str(exc)) from None
        try:
            asyncio.run(_serve(cfg, None if no_web else (web_host, web_port), as_json))
        except CallwardError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail(f"serve: cannot listen: {exc.strerror or exc}") from None


class _QuietServer:
    """uvicorn's Server without its own signal handling (this process owns SIGINT/SIGTERM)."""

    @staticmethod
    def make(app: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                yield

        return Server(
            uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
        )


async def _serve(cfg: Any, web: tuple[str, int] | None, as_json: bool) -> None:
    from callward.cli.web import _listen
    from callward.edge.app import configure_logging
    from callward.runtime import open_runtime

    configure_logging()
    runtime = await open_runtime(cfg)
    node = None
    web_server = None
    web_task = None
    try:
        relays, node = await runtime.start_node()
        bound: dict[str, Any] = {
            "event": "serving",
            "edge": [str(p) for p in node.server.bound],
            "ng": relays[0],
            "relays": relays,
        }
        if web is not None and runtime.records is not None:
            from callward.web import create_app

            sock = _listen(*web)
            web_server = _QuietServer.make(create_app(cfg, runtime.records))
            web_task = asyncio.create_task(web_server.serve(sockets=[sock]))
            bound["web"] = "http://{}:{}/".format(*sock.getsockname()[:2])
        if as_json:
            typer.echo(json.dumps(bound))
        typer.echo(
            f"callward serve: edge {', '.join(bound['edge'])}, relay ng {', '.join(relays)}"
            + (f", web {bound['web']}" if "web" in bound else ""),
            err=True,
        )
        await runtime.until_signalled()
    finally:
        if web_server is not None:
            web_server.should_exit = True
        if web_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(web_task, 5)
        await runtime.close()
