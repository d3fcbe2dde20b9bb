"""The edge's own ``/metrics`` (``edge.metrics_listen``) is behind the same access rule as the
web's: with ``security.metrics_token`` a scrape needs ``Authorization: Bearer <token>`` (401
otherwise, also with a wrong token); without one, only ``security.metrics_allow`` networks are
answered (403 otherwise). Real HTTP over loopback with httpx; port 27060 (safe15's block)."""

from __future__ import annotations

import hashlib

import httpx

from callward.config import CallwardConfig, EdgeConfig, SecurityConfig
from callward.edge.app import EdgeNode

PORT = 27060
URL = f"http://127.0.0.1:{PORT}/metrics"


async def _node(security: SecurityConfig) -> EdgeNode:
    node = EdgeNode(
        CallwardConfig(
            edge=EdgeConfig(listen=["udp:127.0.0.1:27061"], auth=False,
                            metrics_listen=f"127.0.0.1:{PORT}"),
            security=security,
        )
    )  # fmt: skip
    await node.start()
    return node


async def test_token_required_when_configured() -> None:
    token = "s3cret-scrape-token"
    node = await _node(
        SecurityConfig(metrics_token=f"sha256:{hashlib.sha256(token.encode()).hexdigest()}")
    )
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(URL)
            assert r.status_code == 401 and "Bearer" in r.headers["WWW-Authenticate"]
            assert "callward_edge" not in r.text
            r = await c.get(URL, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
            r = await c.get(URL, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and "callward_edge_requests_total" in r.text
    finally:
        await node.stop()


async def test_without_token_only_management_networks() -> None:
    node = await _node(SecurityConfig())  # default: loopback only
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            assert (await c.get(URL)).status_code == 200
    finally:
        await node.stop()
    node = await _node(SecurityConfig(metrics_allow=["10.0.0.0/8"]))
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(URL)
            assert r.status_code == 403 and "callward_edge" not in r.text
    finally:
        await node.stop()
