"""Shared by the ua tests: a real callward edge on a fresh loopback port with digest
subscribers alice and bob (password ``pw-<user>``), stopped at the end of the test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from callward.config import CallwardConfig, EdgeConfig
from peers import free_port

REALM = "callward.local"

StartEdge = Callable[[str], Awaitable[tuple[Any, tuple[str, int]]]]


@pytest.fixture
async def start_edge(tmp_path: Path) -> AsyncIterator[StartEdge]:
    edge_mod = pytest.importorskip("callward.edge.app")
    subs_mod = pytest.importorskip("callward.edge.subscribers")
    started: list[Any] = []

    async def start(transport: str) -> tuple[Any, tuple[str, int]]:
        port = free_port()
        db = tmp_path / "subs.sqlite"
        cfg = CallwardConfig(
            edge=EdgeConfig(
                listen=[f"{transport}:127.0.0.1:{port}"], realm=REALM, domains=[REALM],
                subscribers=f"sqlite:{db}", auth_secret="k" * 32,
            )
        )  # fmt: skip
        subscribers = subs_mod.SqliteSubscribers(db)
        for user in ("alice", "bob"):
            subscribers.put(subs_mod.Subscriber.from_password(user, REALM, f"pw-{user}"))
        edge = edge_mod.EdgeNode(cfg, subscribers=subscribers)
        await edge.start()
        started.append(edge)
        return edge, ("127.0.0.1", port)

    yield start
    for edge in started:
        with contextlib.suppress(Exception):  # a test may have stopped it already
            await edge.stop()
