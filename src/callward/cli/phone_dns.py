"""``callward phone --proxy sip:example.net``: the edge found by RFC 3263 (NAPTR, SRV, A/AAAA;
``sip/dns.py``) through the phone's coherent cache (``ua/device_data.py``), which outlives the
command when ``--keystore`` is given (sealed with AES-GCM). ``--dns-server HOST:PORT`` points
the lookups at a given resolver (default: the system's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from callward.errors import ConfigError

__all__ = ["DNS_OPT", "is_name", "resolve_proxies"]

DNS_OPT: Any = typer.Option(
    None, "--dns-server", help="resolver HOST:PORT for --proxy names (default: the system's)"
)


def is_name(proxy: str) -> bool:
    """``sip:host`` / ``sips:host`` / a bare host name (resolved), not ``HOST:PORT``."""
    if proxy.startswith(("sip:", "sips:")):
        return True
    return ":" not in proxy and not proxy.replace(".", "").isdigit()


class _Counting:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lookups = 0

    async def query(self, name: str, rdtype: str) -> Any:
        self.lookups += 1
        return await self.inner.query(name, rdtype)


async def resolve_proxies(
    names: list[str],
    transport: str,
    dns_server: tuple[str, int] | None,
    keystore: Path | None,
) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Each name's first target over ``transport``, and what it cost (lookups on the wire,
    answers taken from the cache)."""
    from callward.cli.phone_oauth import open_keystore
    from callward.sip.dns_resolver import DnsPythonResolver
    from callward.ua.device_data import DeviceData, network_id

    resolver = _Counting(
        DnsPythonResolver(nameservers=[dns_server[0]], port=dns_server[1])
        if dns_server is not None
        else DnsPythonResolver()
    )
    data = DeviceData(open_keystore(keystore) if keystore is not None else None)
    data.enter_network(network_id(dns_server[0] if dns_server else "192.0.2.1"))
    try:
        out = [await data.proxy(n, transport, resolver) for n in names]
    finally:
        data.save()
    if not out:
        raise ConfigError("no --proxy to resolve")
    return out, {"dns_lookups": resolver.lookups, "dns_cache_hits": data.cache.hits}
