"""Enforce design.md's layering: imports only point down, and protocol cores stay sans-IO."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "callward"

LAYER = {
    "config": 0, "errors": 0, "events": 0, "events_jetstream": 0, "lazy": 0,
    "sip": 1, "sdp": 1, "rtp": 1, "nat": 1, "media": 1, "ng": 1,
    "quality": 2, "records": 2, "privacy": 2, "usage": 2,
    "edge": 3, "ua": 3, "relay": 3,
    "cli": 4, "web": 4, "runtime": 4,
}  # fmt: skip
CORES = {"sip", "sdp", "rtp", "nat", "media", "ng"}
# Modules inside a core package allowed to do I/O: the thin asyncio adapters.
# sip/tls.py builds the ssl contexts the transport adapter uses (no sockets, no clock).
# nat/path_mtu.py and nat/route_watch.py ask the kernel (IP_MTU of a connected socket, the source
# address it picks toward the edge): adapters beside the sans-IO NAT cores, like sip/dns_resolver.py.
IO_ADAPTERS = {
    "sip/transport.py",
    "sip/transport_base.py",
    "sip/stream_transport.py",
    "sip/ws_transport.py",
    "sip/dns_resolver.py",
    "ng/transport.py",
    "sip/tls.py",
    "nat/path_mtu.py",
    "nat/route_watch.py",
}
FORBIDDEN_IN_CORES = {"asyncio", "socket", "ssl", "time", "logging", "structlog", "selectors"}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _area(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    area = _area(path)
    if area not in LAYER:
        return
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "callward" or len(parts) < 2:
            continue
        target = parts[1]
        if target in LAYER and target != area:
            assert LAYER[target] < LAYER[area] or (
                LAYER[target] == LAYER[area] and LAYER[area] in (0, 2, 4)
            ), f"{path.relative_to(SRC)} imports {name}: layer {target} is not below {area}"


@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if _area(p) in CORES],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_cores_are_sans_io(path: Path) -> None:
    rel = str(path.relative_to(SRC))
    if rel in IO_ADAPTERS:
        return
    bad = {n for n in _imports(path) if n.split(".")[0] in FORBIDDEN_IN_CORES}
    assert not bad, f"{rel} is a protocol core but imports {sorted(bad)}"
