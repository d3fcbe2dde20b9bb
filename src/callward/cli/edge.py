"""``callward edge``: run the SIP proxy/registrar; ``callward edge add-subscriber``: provision.

Flags override the YAML ``edge`` section so tests and benchmarks need no config file:
``--listen udp:127.0.0.1:5060`` (repeatable), ``--route USER=SIP-URI`` (repeatable),
``--upstream SIP-URI`` (repeatable, failover order), ``--no-auth``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer

from callward.cli.exits import fail as _fail
from callward.errors import CallwardError

__all__ = ["register"]


def _load(config: Path | None, overrides: dict[str, Any]) -> Any:
    from callward.config import load_config

    cfg = load_config(config)
    edge = cfg.edge.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return cfg.model_copy(update={"edge": edge})


def _overrides(
    listen: list[str],
    route: list[str],
    upstream: list[str],
    no_auth: bool,
    node: str | None,
    realm: str | None,
    location: str | None,
    subscribers: str | None,
    metrics: str | None,
    secret: str | None,
) -> dict[str, Any]:
    routes: dict[str, str] = {}
    for item in route:
        user, eq, uri = item.partition("=")
        if not eq or not user or not uri.startswith(("sip:", "sips:")):
            raise _fail(f"--route {item!r}: expected USER=SIP-URI")
        routes[user] = uri
    for up in upstream:
        if not up.startswith(("sip:", "sips:")):
            raise _fail(f"--upstream {up!r}: expected a sip: or sips: URI")
    out: dict[str, Any] = {
        "listen": list(listen) or None,
        "routes": routes or None,
        "upstreams": list(upstream) or None,
        "auth": False if no_auth else None,
        "node_id": node,
        "realm": realm,
        "location": location,
        "subscribers": subscribers,
        "metrics_listen": metrics,
        "auth_secret": secret,
    }
    return out


def register(app: typer.Typer) -> None:
    edge_app = typer.Typer(
        help="SIP edge: proxy + registrar (RFC 3261 §10, §16).", no_args_is_help=False
    )

    @edge_app.callback(invoke_without_command=True)
    def edge(
        ctx: typer.Context,
        config: Path | None = typer.Option(None, "--config", "-c", help="callward.yaml"),
        listen: list[str] = typer.Option([], "--listen", help="TRANSPORT:HOST:PORT, repeatable"),
        route: list[str] = typer.Option([], "--route", help="USER=SIP-URI, repeatable"),
        upstream: list[str] = typer.Option([], "--upstream", help="SIP-URI, failover order"),
        no_auth: bool = typer.Option(False, "--no-auth", help="no digest authentication"),
        node: str | None = typer.Option(None, "--node", help="node id"),
        realm: str | None = typer.Option(None, "--realm"),
        location: str | None = typer.Option(None, "--location", help="memory or redis://..."),
        subscribers: str | None = typer.Option(None, "--subscribers", help="sqlite:PATH or pg"),
        metrics: str | None = typer.Option(None, "--metrics", help="HOST:PORT for /metrics"),
        secret: str | None = typer.Option(None, "--secret", help="shared key for all nodes"),
    ) -> None:
        """Run the edge until SIGINT/SIGTERM; SIGHUP reloads the configuration."""
        if ctx.invoked_subcommand is not None:
            return
        ov = _overrides(
            listen, route, upstream, no_auth, node, realm, location, subscribers, metrics, secret
        )
        try:
            cfg = _load(config, ov)
            from callward.edge.app import configure_logging, settings_from_config

            configure_logging()

            def reload() -> Any:
                return settings_from_config(_load(config, ov))

            settings = settings_from_config(cfg)  # bad flags exit 2 before anything opens
        except CallwardError as exc:
            raise _fail(str(exc)) from None
        try:
            import uvloop  # "where available" (not a dependency)

            uvloop.install()
        except ImportError:
            pass
        try:
            asyncio.run(_serve(cfg, settings, reload))
        except CallwardError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"cannot listen: {exc.strerror}") from None

    @edge_app.command("add-subscriber")
    def add_subscriber(
        username: str = typer.Argument(..., help="SIP user name"),
        password: str | None = typer.Option(
            None, "--password", help="omit to read one line from stdin"
        ),
        realm: str | None = typer.Option(None, "--realm"),
        tenant: str = typer.Option("default", "--tenant"),
        subscribers: str | None = typer.Option(None, "--subscribers", help="sqlite:PATH or pg"),
        config: Path | None = typer.Option(None, "--config", "-c"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Provision a subscriber: only HA1 hashes (MD5, SHA-256) are stored."""
        from callward.edge.subscribers import Subscriber, open_subscribers

        try:
            cfg = _load(config, {"realm": realm, "subscribers": subscribers})
            pw = password if password is not None else sys.stdin.readline().rstrip("\n")
            if not pw:
                raise _fail("add-subscriber: empty password")
            store = open_subscribers(cfg.edge.subscribers)
            store.put(Subscriber.from_password(username, cfg.edge.realm, pw, tenant))
            store.close()
        except CallwardError as exc:
            raise _fail(str(exc)) from None
        if as_json:
            typer.echo(json.dumps({"username": username, "realm": cfg.edge.realm}))
        else:
            typer.echo(f"subscriber {username} provisioned in realm {cfg.edge.realm}")

    app.add_typer(edge_app, name="edge")


async def _serve(cfg: Any, settings: Any, reload: Any) -> None:
    """The edge through the runtime (callward/runtime.py): its events reach the data layer
    (CDRs on embedded defaults, JetStream with ``storage.nats_url``) and, with
    ``media.relays``, it anchors media through those ng relays."""
    from callward.runtime import open_runtime

    runtime = await open_runtime(cfg)
    try:
        node = await runtime.start_edge(settings=settings, reload=reload)
        bound = ", ".join(str(p) for p in node.server.bound)
        typer.echo(f"callward edge {node.settings.node} listening on {bound}", err=True)
        await runtime.until_signalled()
    finally:
        await runtime.close()
